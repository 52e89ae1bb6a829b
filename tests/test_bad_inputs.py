"""Every bad input is answered before work starts: a catalogue across the four command-line stages.

Each case runs the stage's main(argv) in-process, through run_cli as its command line does, and must
exit non-zero with exactly one `error:` line on stderr and no traceback, write nothing, and leave every
input byte-identical. (tests/test_unlearn.py runs a few of them as real subprocesses.)"""
import hashlib
import json
import os
import shutil

import pytest

import attribution
import evaluate
import finetune
import unlearn
from helpers.cli import run_cli

STAGES = {"finetune": finetune, "attribution": attribution, "unlearn": unlearn, "evaluate": evaluate}
# the valid arguments each case starts from; a case's arguments come after them (the last value of a flag wins)
BASE = {"finetune": ["--data", "{data}", "--out", "{out}", "--steps", "1"],
        "attribution": ["--data", "{data}", "--out", "{out}", "--epochs", "1"],
        "unlearn": ["--model", "{model}", "--data", "{data}", "--forget", "{forget}", "--classifier", "{clf}",
                    "--out", "{out}", "--iterations", "1"],
        "evaluate": ["--data", "{data}", "--forget", "{forget}", "--out", "{out}.json"]}
MODEL = ["--model", "{model}"]

CATALOGUE = [  # (stage, arguments, a fragment of the one-line error)
    # finetune.py
    ("finetune", ["--lr", "-1"], "--lr must be > 0, not -1.0"),
    ("finetune", ["--lr", "nan"], "--lr must be > 0, not nan"),
    ("finetune", ["--batch-size", "0"], "--batch-size must be >= 1, not 0"),
    ("finetune", ["--epochs", "-2"], "--epochs must be > 0"),
    ("finetune", ["--steps", "0"], "--steps must be >= 1"),
    ("finetune", ["--warmup", "1.5"], "--warmup must be in [0, 1]"),
    ("finetune", ["--weight-decay", "-0.1"], "--weight-decay must be >= 0"),
    ("finetune", ["--max-grad-norm", "0"], "--max-grad-norm must be > 0"),
    ("finetune", ["--npo-beta", "0"], "--npo-beta must be > 0"),
    ("finetune", ["--objective", "dpo"], "--objective 'dpo': choose from sft, ga"),
    ("finetune", ["--seed", "-1"], "--seed must be >= 0"),
    ("finetune", ["--layers", "0"], "--layers must be >= 1"),
    ("finetune", ["--d-model", "100"], "--d-model must be a multiple of 8"),
    ("finetune", ["--lr", "abc"], "invalid float value: 'abc'"),
    ("finetune", ["--device", "banana"], "--device 'banana' is not a torch device"),
    ("finetune", ["--device", "cuda:99"], "CUDA device(s)"),
    ("finetune", ["--data", "{root}/missing.jsonl"], "no such file"),
    ("finetune", ["--objective", "npo"], "needs --model"),
    ("finetune", ["--objective", "ga", *MODEL, "--forget", "{all}"], "every owner"),
    ("finetune", ["--exclude", "Nobody Atall"], "unknown owner(s) Nobody Atall"),
    ("finetune", ["--out", "{file}"], "is an existing file"),
    ("finetune", ["--objective", "ga", "--model", "{truncated}", "--forget", "{forget}"], "is truncated or corrupt"),
    ("finetune", ["--model", "{broken}"], "config.json"),
    ("finetune", ["--model", "{model}", "--out", "{model}"], "would overwrite the input --model"),
    # attribution.py
    ("attribution", ["--heldout", "1"], "--heldout must be in [0, 1)"),
    ("attribution", ["--heldout", "-0.1"], "--heldout must be in [0, 1)"),
    ("attribution", ["--max-text-tokens", "0"], "--max-text-tokens must be >= 1"),
    ("attribution", ["--epochs", "0"], "--epochs must be > 0"),
    ("attribution", ["--lr", "-0.001"], "--lr must be > 0"),
    ("attribution", ["--batch-size", "-2"], "--batch-size must be >= 1"),
    ("attribution", ["--out", ""], "give --out"),
    ("attribution", ["--base", "{truncated}"], "is truncated or corrupt"),
    ("attribution", ["--classifier", "{root}/no-such-classifier", "--text", "x"], "no such model folder"),
    ("attribution", ["--out", "{file}"], "is an existing file"),
    ("attribution", ["--device", "banana"], "not a torch device"),
    ("attribution", ["--data", "{bad_json}"], "line 2"),
    # unlearn.py
    ("unlearn", ["--iterations", "-3"], "--iterations must be >= 1, not -3"),
    ("unlearn", ["--kl-coef", "-0.1"], "--kl-coef must be >= 0"),
    ("unlearn", ["--form", "exp"], "--form 'exp': choose from neg, log"),
    ("unlearn", ["--temperature", "0"], "--temperature must be > 0"),
    ("unlearn", ["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),   # not given: fit to the data
    ("unlearn", ["--lora", "--lora-targets", " , "], "--lora-targets must be a comma-separated list of names"),
    ("unlearn", ["--prompts-per-iter", "0"], "--prompts-per-iter must be >= 1"),
    ("unlearn", ["--samples-per-prompt", "0"], "--samples-per-prompt must be >= 1"),
    ("unlearn", ["--target-attribution", "1.5"], "--target-attribution must be in [0, 1]"),
    ("unlearn", ["--target-attribution", "-0.5"], "--target-attribution must be in [0, 1]"),
    ("unlearn", ["--stop-on", "sometimes"], "--stop-on 'sometimes': choose from reported, heldout, never"),
    ("unlearn", ["--min-signal", "2"], "--min-signal must be in [0, 1]"),
    ("unlearn", ["--require-target", "maybe"], "'maybe' is not true or false"),
    ("unlearn", ["--eps", "0"], "--eps must be > 0"),
    ("unlearn", ["--missing-eos-penalty", "0.5"], "--missing-eos-penalty must be <= 0"),
    ("unlearn", ["--min-words", "-1"], "--min-words must be >= 0"),
    ("unlearn", ["--target-kl", "-1"], "--target-kl must be >= 0"),
    ("unlearn", ["--kl-horizon", "0"], "--kl-horizon must be >= 1"),
    ("unlearn", ["--epochs", "0"], "--epochs must be >= 1"),
    ("unlearn", ["--minibatch-size", "0"], "--minibatch-size must be >= 1"),
    ("unlearn", ["--clip", "0"], "--clip must be > 0"),
    ("unlearn", ["--vf-coef", "-1"], "--vf-coef must be >= 0"),
    ("unlearn", ["--gamma", "1.5"], "--gamma must be in [0, 1]"),
    ("unlearn", ["--lam", "-0.1"], "--lam must be in [0, 1]"),
    ("unlearn", ["--retain-coef", "-1"], "--retain-coef must be >= 0"),
    ("unlearn", ["--retain-batch-size", "0"], "--retain-batch-size must be >= 1"),
    ("unlearn", ["--lr", "inf"], "--lr must be > 0, not inf"),
    ("unlearn", ["--save-every", "-1"], "--save-every must be >= 0"),
    ("unlearn", ["--keep", "0"], "--keep must be >= 1"),
    ("unlearn", ["--eval-max-new-tokens", "0"], "--eval-max-new-tokens must be >= 1"),
    ("unlearn", ["--eval-batch-size", "0"], "--eval-batch-size must be >= 1"),
    ("unlearn", ["--form", "bogus"], "--form 'bogus': choose from neg, log"),   # the forms of reward.SCORES
    ("unlearn", ["--advantage", "bogus"], "--advantage 'bogus': choose from gae, group, group_mean, rloo"),   # ppo.ADVANTAGES
    ("unlearn", ["--advantage", "group", "--samples-per-prompt", "2"], "--samples-per-prompt 3 or more (with 2"),
    ("unlearn", ["--advantage", "rloo", "--samples-per-prompt", "1"], "--samples-per-prompt 2 or more"),
    ("unlearn", ["--eval-every", "-1"], "--eval-every must be >= 0"),
    ("unlearn", ["--forget", "{all}"], "every owner"),
    ("unlearn", ["--classifier", "{stranger}"], "does not know the forget owner(s)"),
    ("unlearn", ["--model", "{truncated}"], "is truncated or corrupt"),
    ("unlearn", ["--classifier", "{broken}"], "config.json"),
    ("unlearn", ["--retain-model", "{root}/no-such-model"], "no such model folder"),
    ("unlearn", ["--device", "cuda:99"], "CUDA device(s)"),
    ("unlearn", ["--dtype", "float64"], "invalid choice: 'float64'"),
    ("unlearn", ["--resume", "{root}"], "no checkpoint there"),
    ("unlearn", ["--out", "{file}"], "is an existing file"),
    ("unlearn", ["--out", "{world}"], "would overwrite the input"),
    # evaluate.py
    ("evaluate", [*MODEL, "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    ("evaluate", [*MODEL, "--batch-size", "0"], "--batch-size must be >= 1"),
    ("evaluate", [*MODEL, "--max-questions", "-1"], "--max-questions must be >= 1"),
    ("evaluate", [*MODEL, "--out", "{root}/no-such-folder/eval.json"], "no such folder"),
    ("evaluate", [*MODEL, "--out", "{root}"], "is an existing folder"),
    ("evaluate", [*MODEL, "--out", "{data}"], "would overwrite the input --data"),
    ("evaluate", ["--model", "{root}/no-such-model"], "no such model folder"),
    ("evaluate", ["--model", "{truncated}"], "is truncated or corrupt"),
    ("evaluate", [*MODEL, "--forget", "Nobody Atall"], "unknown owner(s)"),
    ("evaluate", [*MODEL, "--forget", "{all}"], "every owner"),
    ("evaluate", [*MODEL, "--classifier", "{stranger}"], "does not know the forget owner(s)"),
    ("evaluate", [*MODEL, "--retain-json", "{root}/missing.json"], "no such file"),
    ("evaluate", [*MODEL, "--device", "banana"], "not a torch device"),
    ("evaluate", [*MODEL, "--retain-model", "{broken}"], "config.json"),
]


def tree_hash(path):
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(os.path.join(root, name).encode() + f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def inputs(default_world, tmp_path_factory):
    """Paths the cases refer to: the default world's models and data, and broken copies of them."""
    _, world, _, _ = default_world
    root = tmp_path_factory.mktemp("inputs")
    meta = json.loads((world / "world.json").read_text())
    truncated = root / "truncated"
    shutil.copytree(world / "original", truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    broken = root / "broken"
    shutil.copytree(world / "classifier", broken)
    (broken / "config.json").write_text('{"model_type": "llama", ')
    stranger = root / "stranger"   # a classifier trained without the forget owner
    shutil.copytree(world / "classifier", stranger)
    clf_meta = json.loads((stranger / "classifier.json").read_text())
    clf_meta["owners"] = [o if o not in meta["forget"] else "Someone Else" for o in clf_meta["owners"]]
    (stranger / "classifier.json").write_text(json.dumps(clf_meta))
    (root / "a-file.txt").write_text("keep me")
    (root / "bad.jsonl").write_text((world / "records.jsonl").read_text().splitlines()[0] + '\n{"owner": \n')
    return {"world": str(world), "model": str(world / "original"), "clf": str(world / "classifier"),
            "data": str(world / "records.jsonl"), "forget": ",".join(meta["forget"]), "all": ",".join(meta["owners"]),
            "truncated": str(truncated), "broken": str(broken), "stranger": str(stranger),
            "file": str(root / "a-file.txt"), "bad_json": str(root / "bad.jsonl"), "root": str(root)}


@pytest.mark.parametrize("stage,args,fragment", CATALOGUE,
                         ids=[f"{s}:{' '.join(a)}" for s, a, _ in CATALOGUE])
def test_bad_input_is_answered_in_one_line(inputs, tmp_path, capsys, monkeypatch, stage, args, fragment):
    """One line on stderr, a non-zero exit, nothing written, inputs untouched, and no model loaded:
    every input is checked before any work starts."""
    from transformers import AutoModelForCausalLM

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded before the bad input was refused")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_loading)
    paths = {**inputs, "out": str(tmp_path / "out")}
    argv = [a.format(**paths) for a in BASE[stage] + args]
    before = {p: tree_hash(p) for p in (inputs["world"], inputs["root"])}
    with pytest.raises(SystemExit) as exit:
        run_cli(lambda: STAGES[stage].main(argv))
    err = capsys.readouterr().err
    assert exit.value.code not in (0, None)
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and err.strip().splitlines()[-1] == error_lines[0], err[-3000:]
    assert "Traceback" not in err and fragment in error_lines[0], error_lines[0]
    assert os.listdir(tmp_path) == []                                    # nothing written
    assert {p: tree_hash(p) for p in before} == before                   # inputs untouched


def test_the_catalogue_covers_every_stage_and_numeric_field():
    assert len(CATALOGUE) >= 40 and {s for s, _, _ in CATALOGUE} == set(STAGES)
    # every field of every config but a switch has a rule where its flags are parsed, which its default
    # passes and a value out of range breaks
    from dataclasses import fields
    from types import SimpleNamespace

    from attribution import CLASSIFIER_CHECKS, ClassifierConfig
    from finetune import FINETUNE_CHECKS, FinetuneConfig
    from helpers.cli import DareuError, config_from_args, flag_type
    from helpers.lora import LORA_CHECKS, LoraConfig
    from unlearn import CHECKS
    for config, checks in (*CHECKS, (FinetuneConfig, FINETUNE_CHECKS), (ClassifierConfig, CLASSIFIER_CHECKS),
                           (LoraConfig, LORA_CHECKS)):
        config_from_args(config, SimpleNamespace(**vars(config())), checks)   # the defaults pass
        for f in fields(config):
            if flag_type(f) is bool:   # a switch has no out-of-range value (its parser refuses words)
                continue
            assert f.name in checks, f"{config.__name__}.{f.name} has no check"
            bad = {float: float("nan"), int: -10**9, str: " , " if f.name == "targets" else "no such choice"}[flag_type(f)]
            with pytest.raises(DareuError, match="--" + f.name.replace("_", "-")):
                config_from_args(config, SimpleNamespace(**{**vars(config()), f.name: bad}), checks)
