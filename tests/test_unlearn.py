"""unlearn.py end to end on the embedded world, and bad input: one-line errors, nothing written."""
import hashlib
import json
import os

import pytest
import torch

from conftest import run_python


def test_default_run_end_to_end(default_world):
    cache, world, out, proc = default_world
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("forget_attribution", "forget_rouge", "retain_rouge"):
        assert {"original", "unlearned", "retain"} <= set(summary[key])
        assert all(0 <= v <= 1 for v in summary[key].values())
    assert summary["seconds"] > 0 and summary["iterations"] == 2
    # the classifier attributes the original model's forget answers to F, the retain model's not
    assert summary["forget_attribution"]["original"] > 0.8
    assert summary["forget_attribution"]["retain"] < 0.3
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


def test_every_stage_has_help():
    for stage in ("data.py", "rollout.py", "reward.py", "ppo.py", "finetune.py", "attribution.py",
                  "unlearn.py", "evaluate.py"):
        proc = run_python([stage, "--help"])
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (stage, proc.stderr[-500:])


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
