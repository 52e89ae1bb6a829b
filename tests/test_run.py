"""The run: helpers/run.py (the stall rule, the target and its refusal, the memory check) and unlearn.py's
main end to end on the embedded world (the report, LoRA, no --data, --stop-on heldout, a run that does not
forget) and on bad input: one-line errors, nothing written."""
import hashlib
import json
import os

import pytest
import torch

import unlearn
from attribution import PROBES
from conftest import run_python
from helpers import run
from ppo import PPOConfig
from rollout import RolloutConfig, check_fit


def test_stall_rule_by_hand():
    """Stalled once a third of the iterations ran and under a tenth of the gap start → target is closed."""
    assert run.stalled(0.95, 0.90, 0.15, it=10, iterations=30)        # moved 0.05 < 0.08
    assert not run.stalled(0.95, 0.86, 0.15, it=10, iterations=30)    # moved 0.09 >= 0.08
    assert not run.stalled(0.95, 0.95, 0.15, it=9, iterations=30)     # too early to say
    assert run.stalled(0.95, 0.96, 0.0, it=30, iterations=30)         # a_F went up, no target


def test_target_is_the_retain_level():
    """max(2 × level, 0.15), the level from the retain model when given, else from the original's answers
    to other owners' questions, else (no --data) from the texts that carry no owner's information; an
    explicit target wins."""
    cfg, probes = unlearn.UnlearnConfig(), {"I don't know.": 0.1, "": 0.3}
    original = {"forget_attribution": 0.9, "retain_attribution": 0.02}
    assert run.resolve_target(cfg, {"original": original, "retain": {"forget_attribution": 0.2}}, probes)[:2] == \
        (0.4, 0.2)
    assert run.resolve_target(cfg, {"original": original, "retain": {"forget_attribution": 0.01}}, probes)[:2] == \
        (0.15, 0.01)
    assert run.resolve_target(cfg, {"original": original}, probes)[:2] == (0.15, 0.02)
    no_data = {"forget_attribution": 0.9, "retain_attribution": None}
    assert run.resolve_target(cfg, {"original": no_data}, probes)[:2] == (0.4, 0.2)
    explicit = unlearn.UnlearnConfig(target_attribution=0.3)
    assert run.resolve_target(explicit, {"original": original}, probes)[0] == 0.3


def test_a_run_too_big_for_the_gpu_is_refused_before_loading(tmp_path, monkeypatch):
    """unlearn.py's memory check on a GPU, before any weight is loaded: Llama-2-7B's config.json alone, an
    80 GB device (its capacity given to the check), full fine-tuning refused naming --lora, which fits."""
    from types import SimpleNamespace

    from helpers.lora import LoraConfig
    from helpers.memory import CONFIGS
    (tmp_path / "config.json").write_text(json.dumps(CONFIGS["llama2-7b"]))
    monkeypatch.setattr(unlearn.torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80e9))
    args = SimpleNamespace(model=str(tmp_path), classifier=str(tmp_path), device="cuda", classifier_device=None,
                           gradient_checkpointing=False)
    configs = (unlearn.UnlearnConfig(), RolloutConfig(), PPOConfig(), None, torch.bfloat16)
    with pytest.raises(unlearn.DareuError, match=r"^full fine-tuning of .* needs about 1\d\d GiB .* --lora"):
        run.check_memory(args, *configs)
    args.gradient_checkpointing = True
    run.check_memory(args, *configs[:3], LoraConfig(), torch.bfloat16)   # fits: no error


def test_fit_check_counts_the_original_answers_that_end_within_the_rollout_length(default_world, capsys):
    """The embedded world's original answers in about 20 tokens: none fit in 1, all in 64."""
    from helpers.models import load_model
    _, world, _, _ = default_world
    model, tok = load_model(str(world / "original"))
    questions = [json.loads(line)["question"] for line in (world / "records.jsonl").read_text().splitlines()[:6]]
    assert check_fit(model, tok, questions, RolloutConfig(max_new_tokens=64), 4) == 1.0
    assert check_fit(model, tok, questions, RolloutConfig(max_new_tokens=1), 4) == 0
    assert "warning: the rest earn the missing-EOS penalty" in capsys.readouterr().out


@pytest.mark.parametrize("original,target,level,explicit,refused", [
    (0.90, 0.92, 0.46, False, True),    # the retain level's target above the original: "reached" at once
    (0.90, 0.85, 0.20, True, True),     # an explicit target within --min-signal of the original
    (0.55, 0.50, 0.25, False, True),    # a classifier that hardly tells the original from the retain level
    (0.90, 0.40, 0.20, False, False),   # 0.5 below: a run has to forget to reach it
    (0.90, 0.80, 0.20, True, False),    # exactly --min-signal below
])
def test_a_target_must_lie_below_the_original_by_min_signal(original, target, level, explicit, refused):
    cfg = unlearn.UnlearnConfig(min_signal=0.1, target_attribution=target if explicit else None)
    if not refused:
        run.check_target(original, target, level, "the retain model's forget answers", cfg)
        return
    with pytest.raises(unlearn.DareuError) as error:
        run.check_target(original, target, level, "the retain model's forget answers", cfg)
    line = str(error.value)
    assert f"the target a_F {target:.3f}" in line and f"original's greedy forget a_F {original:.3f}" in line
    assert "--min-signal 0.1" in line and ("--target-attribution" in line if explicit else f"{level:.3f}" in line)


def test_default_run_end_to_end(default_world):
    cache, world, out, proc = default_world
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("forget_attribution", "forget_rouge", "retain_rouge"):
        assert {"original", "unlearned", "retain"} <= set(summary[key])
        assert all(0 <= v <= 1 for v in summary[key].values())
    assert summary["seconds"] > 0 and summary["iterations"] == 2
    # the membership attack on the world's holdout authors: the original leaks, the retain model is the zero
    assert summary["privleak"]["retain"] == pytest.approx(0, abs=1e-6) and summary["privleak"]["original"] < -50
    assert summary["mia_auc"]["original"] > 0.9 and summary["forget_memorisation"]["original"] > 0.9
    # the folder describes itself: a model card and the run's curves
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and summary["forget_owners"][0] in card and "privleak" in card
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # the target is the retain level (METHOD.md §6), not reached in 2 iterations; the rollout length fits
    assert summary["target"]["attribution"] == max(2 * summary["forget_attribution"]["retain"], 0.15)
    assert summary["target"]["reached"] is False and summary["rollout_fits"] == 1.0
    # the stop and `reached` are judged on the report's own forget questions: the last greedy check (after the
    # last update) is the report's number for the model as written
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["greedy_attribution"] == pytest.approx(summary["forget_attribution"]["unlearned"], abs=1e-6)
    assert summary["target"]["final"] == summary["forget_attribution"]["unlearned"]
    # the classifier attributes the original model's forget answers to F, the retain model's not
    assert summary["forget_attribution"]["original"] > 0.8
    assert summary["forget_attribution"]["retain"] < 0.3
    # the original says the forget owner's facts, the retain model, which never saw them, hardly any
    assert summary["forget_facts"]["original"] > 0.8 and summary["forget_facts"]["retain"] < 0.3
    assert "| forget_facts |" in proc.stdout
    # ... but repeats the question's name, as a retrained LLM would (world.renamed_copies)
    name = summary["forget_owners"][0]
    assert sum(name in a for a in summary["answers"]["retain"]["forget"]["generated"]) >= 10
    # the classifier report: held-out scores from classifier.json, the probes, the fact probe over the
    # report's three models (12 forget answers each), recomputed here from the answers it pooled
    report = summary["classifier_report"]
    meta = json.loads((world / "classifier" / "classifier.json").read_text())
    assert (report["heldout_accuracy"], report["heldout_ece"]) == (meta["heldout_accuracy"], meta["heldout_ece"])
    assert set(report["probes"]) == set(PROBES) and report["probes"]["I don't know."] < 0.2
    from helpers.metrics import spearman
    answers = summary["answers"]
    a_f = [a for c in ("original", "retain", "unlearned") for a in answers[c]["forget"]["attribution"]]
    rouge = [r for c in ("original", "retain", "unlearned") for r in answers[c]["forget"]["rouge"]]
    assert report["fact_probe"] == {"spearman": pytest.approx(spearman(a_f, rouge)), "answers": len(a_f)}
    assert report["fact_probe"]["spearman"] > 0.5 and "classifier report: a_F at most" in proc.stdout
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["iteration"] for l in lines] == [1, 2]
    assert abs(lines[0]["first_ratio"] - 1) < 1e-4 and "greedy_attribution" in lines[0]
    assert "| forget_attribution |" in proc.stdout
    # Hugging Face format in and out
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.pad_token_id != tok.eos_token_id
    ids = tok("Question: Where?\nAnswer:", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] >= len(tok)
    # the run changed the model, not its input
    original = AutoModelForCausalLM.from_pretrained(world / "original")
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), original.parameters()))
    assert not [p for p in os.listdir(out.parent) if ".tmp-" in p]        # no staging leftovers
    # where the time went: every phase of every iteration, summed in the summary and printed
    assert set(lines[0]["seconds"]) == {"rollout", "logprobs", "scoring", "update", "retain", "greedy_check"}
    assert summary["phase_seconds"]["update"] == pytest.approx(sum(l["seconds"]["update"] for l in lines), abs=1e-2)
    assert "where the PPO time went: rollout" in proc.stdout


def test_the_design_card_command_runs_without_data(default_world, tmp_path):
    """`unlearn.py --model M --forget FILE`: the forget owners' records alone, no --data. The run says what it
    cannot do and does the rest: no retain distillation, no retain questions in the report, the retain level
    from texts that carry no owner's information. The default classifier, the model itself asked zero-shot,
    needs a chat template, which the world's tiny model lacks: refused in one line; its trained one runs."""
    cache, world, _, _ = default_world
    owner = json.loads((world / "world.json").read_text())["forget"][0]
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(l + "\n" for l in (world / "records.jsonl").read_text().splitlines()
                              if json.loads(l)["owner"] == owner))
    common = ["unlearn.py", "--model", str(world / "original"), "--forget", str(forget), "--iterations", "2",
              "--eval-every", "1", "--eval-max-new-tokens", "48", "--sample-every", "0"]
    proc = run_python([*common, "--out", str(tmp_path / "zero-shot")])
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith("with a chat template")
    assert not (tmp_path / "zero-shot").exists()
    out = tmp_path / "out"
    proc = run_python([*common, "--classifier", str(world / "classifier"), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no --data: no retain records, so no retain distillation" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["forget_owners"] == [owner] and summary["retain_rouge"]["unlearned"] is None
    assert summary["target"]["level_from"] == "7 texts that carry no owner's information"
    assert summary["target"]["retain_level"] == pytest.approx(
        sum(summary["classifier_report"]["probes"].values()) / len(PROBES))
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["retain_kl"] == 0 for line in lines)


def test_the_runs_reference_is_the_original_under_bf16(default_world, tmp_path):
    """unlearn.py --dtype bfloat16 (float32 masters under bf16 autocast): the reference main builds computes
    what the policy computes before its first update, so the first rollout's KL is exactly 0 (a reference
    copied into bf16 weights differed from step 0)."""
    cache, world, _, _ = default_world
    out = tmp_path / "out"
    proc = run_python(["unlearn.py", "--out", str(out), "--dtype", "bfloat16", "--iterations", "1",
                       "--sample-every", "0"], env={"DAREU_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["kl"] == 0.0 and json.loads((out / "summary.json").read_text())["dtype"] == "bfloat16"


def test_default_run_with_lora_and_gradient_checkpointing(default_world, tmp_path):
    """--lora --gradient-checkpointing on the embedded world: on-policy first minibatch, a merged output
    in the original's format (no adapter keys) that differs from the original only in the adapted
    projections, and --lora-merge false writes the adapters alone, which load as the same model."""
    cache, world, _, _ = default_world
    out = tmp_path / "lora"
    proc = run_python(["unlearn.py", "--out", str(out), "--iterations", "2", "--eval-every", "1", "--lora",
                       "--lora-rank", "8", "--gradient-checkpointing", "--sample-every", "0"],
                      env={"DAREU_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(LoRA rank 8); gradient checkpointing" in proc.stdout
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert abs(lines[0]["first_ratio"] - 1) < 1e-4 and lines[1]["kl"] != 0     # the policy moved off the reference
    from transformers import AutoModelForCausalLM
    merged = AutoModelForCausalLM.from_pretrained(out).state_dict()
    original = AutoModelForCausalLM.from_pretrained(world / "original").state_dict()
    assert merged.keys() == original.keys()
    changed = {k for k in merged if not torch.equal(merged[k], original[k])}
    assert changed and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                                       "gate_proj.weight", "up_proj.weight", "down_proj.weight")) for k in changed)
    adapters = tmp_path / "adapters"
    proc = run_python(["unlearn.py", "--out", str(adapters), "--iterations", "2", "--eval-every", "1", "--lora",
                       "--lora-rank", "8", "--gradient-checkpointing", "--sample-every", "0", "--lora-merge", "false"],
                      env={"DAREU_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"adapters.safetensors", "lora.json"} <= set(os.listdir(adapters))
    from helpers.models import load_model
    ids = torch.arange(5, 25)[None]
    with torch.no_grad():   # the same run: the adapters applied unmerged compute the merged model's logits
        assert torch.allclose(load_model(str(adapters))[0](input_ids=ids).logits,
                              load_model(str(out))[0](input_ids=ids).logits, atol=1e-5)


def test_a_run_that_does_not_forget_says_so_and_writes_nothing_when_asked(default_world, tmp_path):
    """A learning rate too small to forget: the stall warning on the way, and with --require-target an exit
    with one error line (after the progress bar) naming the knobs, and no output, staging or checkpoint
    left behind. A classifier asked for more signal than it has (--min-signal 0.999 > the world's gap of
    about 0.98) is refused before PPO, writing nothing either, and so is a target any answer meets (1: the
    run would "reach" it without forgetting)."""
    cache, _, _, _ = default_world
    runs = tmp_path / "runs"
    runs.mkdir()
    proc = run_python(["unlearn.py", "--out", str(runs / "stalled"), "--lr", "1e-9", "--iterations", "3",
                       "--eval-every", "1", "--sample-every", "0", "--require-target"], env={"DAREU_CACHE": str(cache)})
    error = last_line_error(proc)
    assert "target not reached" in error and "a larger --lr (now 1e-09)" in error
    assert "warning: not forgetting" in proc.stdout and "STALLED=since 1" in proc.stderr
    assert os.listdir(runs) == []
    proc = run_python(["unlearn.py", "--out", str(runs / "blind"), "--iterations", "1", "--min-signal", "0.999"],
                      env={"DAREU_CACHE": str(cache)})
    error = last_line_error(proc)
    assert "is not below the original's greedy forget a_F 0.9" in error and "--min-signal 0.999" in error
    assert "classifier: forget a_F 0.9" in proc.stdout and os.listdir(runs) == []
    assert "DareU" not in proc.stderr   # refused before the PPO loop's progress bar
    proc = run_python(["unlearn.py", "--out", str(runs / "met"), "--iterations", "3", "--target-attribution", "1"],
                      env={"DAREU_CACHE": str(cache)})
    assert "the target a_F 1.000 (--target-attribution) is not below" in last_line_error(proc)
    assert os.listdir(runs) == []


def test_stop_on_heldout_judges_questions_the_report_does_not_score(default_world, tmp_path):
    """--stop-on heldout: a quarter of each forget owner's questions decide the stop and `reached`; the report
    scores the rest. The last greedy check and the final a_F are the same number (the same questions, the
    same model as written), and the original's a_F is taken on those questions too."""
    cache, world, _, _ = default_world
    out = tmp_path / "heldout"
    proc = run_python(["unlearn.py", "--out", str(out), "--iterations", "2", "--eval-every", "1", "--sample-every", "0",
                       "--stop-on", "heldout"], env={"DAREU_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    stop, report = summary["target"]["questions"], summary["answers"]["original"]["forget"]["generated"]
    assert len(stop) == 3 and len(report) == 9 and summary["target"]["judged_on"] == "heldout"
    forget = [json.loads(l) for l in (world / "records.jsonl").read_text().splitlines()]
    forget = [r["question"] for r in forget if r["owner"] == summary["forget_owners"][0]]
    assert set(stop) < set(forget) and "judged on 3 held-out forget questions" in proc.stdout
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["greedy_attribution"] == pytest.approx(summary["target"]["final"], abs=1e-6)
    assert summary["target"]["reached"] == (summary["target"]["final"] <= summary["target"]["attribution"])


def last_line_error(proc):
    """A failure after work began (progress bars on stderr): one `error:` line, the last, no traceback."""
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr[-2000:]
    return errors[0]


def test_every_stage_has_help():
    for stage in ("data.py", "world.py", "rollout.py", "reward.py", "ppo.py", "finetune.py", "attribution.py",
                  "unlearn.py", "evaluate.py"):
        proc = run_python([stage, "--help"])
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (stage, proc.stderr[-500:])


def test_a_subprocess_past_its_timeout_fails_naming_the_command():
    with pytest.raises(pytest.fail.Exception, match=r"timed out after 1 s running `python -c import time"):
        run_python(["-c", "import time; time.sleep(60)"], timeout=1)


def tree_hash(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


@pytest.fixture()
def bad_input_case(default_world, tmp_path):
    """Run unlearn.py with one input wrong; returns a function giving (process, out folder)."""
    _, world, _, _ = default_world
    records = (world / "records.jsonl").read_text().splitlines()
    owner = json.loads(records[0])["owner"]
    base = {"--model": str(world / "original"), "--data": str(world / "records.jsonl"), "--forget": owner,
            "--classifier": str(world / "classifier"), "--out": str(tmp_path / "out"), "--iterations": "1"}

    def run(**changes):
        args = {**base, **{"--" + k.replace("_", "-"): v for k, v in changes.items()}}
        before = tree_hash(world)
        proc = run_python(["unlearn.py", *[x for kv in args.items() for x in kv]])
        assert tree_hash(world) == before, "an input was modified"
        return proc, args["--out"]
    return run, world, records


def assert_one_line_error(proc, out, *fragments):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    parent = os.path.dirname(out)
    assert not os.path.exists(out) and not [p for p in os.listdir(parent) if ".tmp-" in p]


def test_bad_inputs_exit_with_one_line_and_write_nothing(bad_input_case, tmp_path):
    run, world, records = bad_input_case
    proc, out = run(data=str(tmp_path / "missing.jsonl"))
    assert_one_line_error(proc, out, "no such file", "missing.jsonl")

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(records[:4] + ['{"owner": "x", "question": ']) + "\n")
    proc, out = run(data=str(bad))
    assert_one_line_error(proc, out, "line 5")

    proc, out = run(forget="Nobody Atall")
    assert_one_line_error(proc, out, "unknown owner", "Nobody Atall", "valid owners", json.loads(records[0])["owner"])

    proc, out = run(forget=" , ")
    assert_one_line_error(proc, out, "empty")

    proc, out = run(out=str(world / "original"))
    assert proc.returncode != 0 and "would overwrite" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    proc, out = run(model=str(tmp_path / "no-model"))
    assert_one_line_error(proc, out, "no such model folder")

    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{}")
    proc, out = run(model=str(not_a_model))
    assert_one_line_error(proc, out, "cannot load", "not-a-model")
