"""Long runs survive: exact resume from a checkpoint, clean interrupts by a real signal, the non-finite guard."""
import contextlib
import copy
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

import finetune as finetune_module
import unlearn as unlearn_module
from attribution import Classifier
from conftest import ROOT
from evaluate import EvalConfig
from finetune import FinetuneConfig, finetune
from helpers import run as harness
from helpers.cli import SIGNALS, DareuError, Interrupted, checkpoints, load_state, run_cli
from helpers.records import Batches, owners_of, split_records
from helpers.run import Run
from ppo import PPOConfig
from reward import RewardConfig
from rollout import RolloutConfig
from unlearn import Args, Models, Task, UnlearnConfig, unlearn


@pytest.fixture()
def tiny_run(tiny, world_records, tmp_path):
    """run(iterations, ckpt_dir=None, state=None, **cfg) -> (model, metrics lines): a few PPO iterations of
    a random tiny model against a random tiny classifier, each run on a fresh copy of the same model."""
    model, tok = tiny
    owners = owners_of(world_records)
    forget, retain = split_records(world_records, owners[:1])
    classifier = Classifier(copy.deepcopy(model), tok, owners, label_ids=list(range(10, 10 + len(owners))))
    ref = copy.deepcopy(model).requires_grad_(False)

    def run(iterations, ckpt_dir=None, state=None, **changes):
        policy = copy.deepcopy(model)
        cfg = UnlearnConfig(**{**dict(iterations=iterations, prompts_per_iter=4, eval_every=0, sample_every=0),
                               **changes})
        metrics = tmp_path / f"metrics-{time.time_ns()}.jsonl"
        unlearn(Models(policy, tok, ref, classifier), Task(forget, retain, owners[:1]),
                Args(cfg, RolloutConfig(max_new_tokens=8), RewardConfig(),
                     PPOConfig(lr=1e-3, epochs=1, minibatch_size=4, retain_batch_size=4), EvalConfig()),
                Run(str(metrics), ckpt_dir, {"test": True}, state))
        return policy, [json.loads(line) for line in metrics.read_text().splitlines()]
    return run, classifier


@contextlib.contextmanager
def signal_handlers():
    """SIGINT / SIGTERM handled as run_cli handles them."""
    previous = {s: signal.signal(s, SIGNALS.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        SIGNALS.received = None


def without_clock(lines):
    return [{k: v for k, v in line.items() if k not in ("tokens_per_s", "seconds")} for line in lines]


def assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_batches_resume_where_they_stopped(world_records):
    import random
    a = Batches(world_records, 5, random.Random(0))
    first = [next(a) for _ in range(7)]
    b = Batches(world_records, 5, random.Random(0))
    [next(b) for _ in range(3)]
    state, rng_state = b.state(), b.rng.getstate()
    c = Batches(world_records, 5, random.Random())
    c.load_state(state)
    c.rng.setstate(rng_state)
    assert [next(c) for _ in range(4)] == first[3:]
    # one pass of the 48 records is 10 batches (the last one short), each record once
    assert [len(x) for x in first[:7]] == [5] * 7 and len({r["question"] for x in first for r in x}) == 35


def test_interrupted_and_resumed_run_is_bitwise_identical(tiny_run, tmp_path, monkeypatch):
    run, _ = tiny_run
    whole, whole_metrics = run(4, str(tmp_path / "a"), save_every=2)
    assert [os.path.basename(c) for c in checkpoints(str(tmp_path / "a"))] == ["step-000002", "step-000004"]
    # a real SIGINT during iteration 3: the iteration finishes, a checkpoint is written, Interrupted is raised
    calls = []

    def update_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)
    original = unlearn_module.ppo_update
    monkeypatch.setattr(unlearn_module, "ppo_update", update_then_signal)
    with signal_handlers(), pytest.raises(Interrupted):
        run(4, str(tmp_path / "b"), save_every=0)
    monkeypatch.setattr(unlearn_module, "ppo_update", original)
    saved = checkpoints(str(tmp_path / "b"))
    assert [os.path.basename(c) for c in saved] == ["step-000003"] and len(calls) == 3
    # a fresh copy of the original model, resumed from the checkpoint, ends where the whole run ended
    resumed, metrics = run(4, str(tmp_path / "b"), load_state(saved[-1]))
    assert_same_weights(resumed, whole)
    assert without_clock(metrics) == without_clock(whole_metrics) and len(metrics) == 4
    assert metrics[:3] == [json.loads(l) for l in load_state(saved[-1])["metrics"].splitlines()]
    # and from the uninterrupted run's checkpoint at iteration 2
    resumed, metrics = run(4, None, load_state(checkpoints(str(tmp_path / "a"))[0]))
    assert_same_weights(resumed, whole)
    assert without_clock(metrics) == without_clock(whole_metrics)


def test_a_completed_run_writes_no_checkpoint_unless_asked(tiny_run, tmp_path):
    """AdamW's state is twice the model (84 GB for a 7B one): a run that completes writes none, unless
    --save-every asks for them (then also one at the end); a finetune run likewise."""
    run, _ = tiny_run
    run(3, str(tmp_path / "quiet"), save_every=0)
    assert checkpoints(str(tmp_path / "quiet")) == []
    run(3, str(tmp_path / "asked"), save_every=2)
    assert [os.path.basename(c) for c in checkpoints(str(tmp_path / "asked"))] == ["step-000002", "step-000003"]


def test_a_second_signal_abandons_the_iteration(tiny_run, tmp_path, monkeypatch):
    run, _ = tiny_run
    real, calls = unlearn_module.ppo_update, []

    def update_after_two_signals(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)   # raises Interrupted here, before this update
        return real(*args, **kwargs)
    monkeypatch.setattr(unlearn_module, "ppo_update", update_after_two_signals)
    with signal_handlers(), pytest.raises(Interrupted):
        run(3, str(tmp_path / "c"), save_every=1)
    # the abandoned iteration 2 left no checkpoint and no staging folder; iteration 1's is whole
    assert os.listdir(tmp_path / "c") == ["step-000001"] and len(calls) == 2
    assert load_state(checkpoints(str(tmp_path / "c"))[-1])["iteration"] == 1


def signal_at_step(monkeypatch, step, signum):
    """Send `signum` to this process while finetune computes the loss of its `step`-th step."""
    real, calls = finetune_module.objective_loss, []

    def loss_then_signal(*args):
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signum)
        return real(*args)
    monkeypatch.setattr(finetune_module, "objective_loss", loss_then_signal)


def test_interrupted_and_resumed_finetune_is_bitwise_identical(tiny, world_records, tmp_path, monkeypatch):
    model, tok = tiny
    forget, retain = split_records(world_records, owners_of(world_records)[:1])
    cfg = FinetuneConfig(objective="npo_gd", steps=6, lr=1e-3, batch_size=4)   # a reference model, two streams

    def run(ckpt_dir, state=None):
        trained = copy.deepcopy(model)
        return trained, finetune(trained, tok, forget, cfg, retain, "test", ckpt_dir, {"test": True}, state)
    whole, whole_loss = run(str(tmp_path / "a"))
    assert checkpoints(str(tmp_path / "a")) == []   # completed, and no --save-every: no checkpoint
    signal_at_step(monkeypatch, 4, signal.SIGTERM)
    with signal_handlers(), pytest.raises(Interrupted):
        run(str(tmp_path / "b"))
    monkeypatch.undo()
    saved = checkpoints(str(tmp_path / "b"))
    assert [os.path.basename(c) for c in saved] == ["step-000004"]
    resumed, loss = run(str(tmp_path / "b"), load_state(saved[-1]))
    assert_same_weights(resumed, whole)
    assert loss == whole_loss


def test_finetune_command_resumes_from_scratch_exactly(tmp_path, capsys, monkeypatch):
    """The command line end to end, in-process: a from-scratch SFT run stopped by SIGINT at step 4 and
    resumed with --resume writes the same model as an uninterrupted run, and removes its checkpoints."""
    from safetensors.torch import load_file
    args = ["--steps", "6", "--batch-size", "8", "--layers", "1", "--d-model", "32", "--vocab-size", "300"]
    run_cli(lambda: finetune_module.main(["--out", str(tmp_path / "whole"), *args]))
    signal_at_step(monkeypatch, 4, signal.SIGINT)
    out = tmp_path / "split"
    with pytest.raises(SystemExit) as exit:
        run_cli(lambda: finetune_module.main(["--out", str(out), *args]))
    assert exit.value.code == 130 and not out.exists()
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"--resume {out}.checkpoints")
    monkeypatch.undo()
    run_cli(lambda: finetune_module.main(["--out", str(out), *args, "--resume", f"{out}.checkpoints"]))
    assert sorted(os.listdir(tmp_path)) == ["split", "whole"]
    whole, split = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert whole.keys() == split.keys() and all(torch.equal(whole[k], split[k]) for k in whole)


def test_nonfinite_classifier_output_skips_the_update(tiny_run, monkeypatch):
    run, classifier = tiny_run
    one, _ = run(1)
    scored = []
    real = classifier.forget_attribution

    def nan_on_second_iteration(*args):
        scored.append(1)
        a = real(*args)
        return a * float("nan") if len(scored) == 2 else a
    monkeypatch.setattr(classifier, "forget_attribution", nan_on_second_iteration)
    two, metrics = run(2)
    assert_same_weights(two, one)            # iteration 2 never reached the weights
    assert [m["nonfinite_steps"] for m in metrics] == [0, 1]
    assert "score" in metrics[0] and "score" not in metrics[1] and "pg_loss" not in metrics[1]


def test_nonfinite_gradient_norm_skips_one_step(tiny_run, monkeypatch):
    run, _ = tiny_run
    clip = torch.nn.utils.clip_grad_norm_
    calls = []

    def inf_once(*args, **kwargs):
        calls.append(1)
        norm = clip(*args, **kwargs)
        return norm * float("inf") if len(calls) == 2 else norm
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", inf_once)
    _, metrics = run(2)
    assert [m["nonfinite_steps"] for m in metrics] == [1, 0]
    assert all(v == v for m in metrics for v in m.values())   # no NaN reaches metrics.jsonl


def test_nonfinite_losses_in_a_row_stop_the_run_keeping_the_last_checkpoint(tiny_run, tiny, tmp_path, monkeypatch):
    run, _ = tiny_run
    import ppo
    real = ppo.retain_distillation
    calls = []

    def nan_after_two_steps(*args):
        calls.append(1)
        kl = real(*args)
        return kl * float("nan") if len(calls) > 2 else kl
    monkeypatch.setattr(ppo, "retain_distillation", nan_after_two_steps)
    with pytest.raises(DareuError, match=r"3 non-finite steps in a row .* at iteration 3; stopped\. Last good "
                                         r"checkpoint: .*step-000002"):
        run(5, str(tmp_path / "c"), save_every=1)   # 2 steps an iteration: steps 3-4 (iteration 2), 5 stop
    assert [os.path.basename(c) for c in checkpoints(str(tmp_path / "c"))] == ["step-000001", "step-000002"]
    state = load_state(checkpoints(str(tmp_path / "c"))[-1])
    assert state["nonfinite_in_a_row"] == 2
    assert [json.loads(l)["nonfinite_steps"] for l in state["metrics"].splitlines()] == [0, 2]


def test_nonfinite_finetune_steps_never_reach_the_weights_and_stop_the_run(tiny, world_records, monkeypatch):
    model, tok = tiny
    model = copy.deepcopy(model)
    real, calls, before = finetune_module.objective_loss, [], {}

    def nan_from_step_three(cfg, trained, *args):
        calls.append(1)
        loss = real(cfg, trained, *args)
        if len(calls) == 3:
            before.update({k: v.clone() for k, v in trained.state_dict().items()})
        return loss * float("nan") if len(calls) >= 3 else loss
    monkeypatch.setattr(finetune_module, "objective_loss", nan_from_step_three)
    with pytest.raises(DareuError, match=r"3 non-finite steps in a row \(loss or gradient norm\) at step 5; stopped"):
        finetune(model, tok, world_records, FinetuneConfig(steps=8, lr=1e-3, batch_size=4))
    assert len(calls) == 5 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ---- a real signal to a real run

def signal_run(args, out, signum):
    """Start `python args...`, send `signum` once its first checkpoint exists, and check the exit: status
    128 + signum, one last line saying how to resume, no traceback, no --out, no staging folder."""
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out.parent / "out.checkpoints" / "step-000001").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted by {signal.Signals(signum).name}; resume with: python {args[0]} ")
    assert "Traceback" not in stderr
    assert not out.exists() and sorted(os.listdir(out.parent)) == ["out.checkpoints"]
    assert all(n.startswith("step-") for n in os.listdir(out.parent / "out.checkpoints"))
    return shlex.split(last.split("resume with: ", 1)[1]), load_state(checkpoints(str(out) + ".checkpoints")[-1])


def test_sigint_stops_finetune_with_a_checkpoint(tmp_path):
    out = tmp_path / "out"
    command, state = signal_run(["finetune.py", "--out", str(out), "--steps", "2000", "--save-every", "1"], out,
                                signal.SIGINT)
    assert 1 <= state["step"] < 2000 and command[-2:] == ["--resume", str(out) + ".checkpoints"]


def test_sigterm_stops_unlearn_with_a_checkpoint_and_the_printed_command_resumes(default_world, tmp_path, capsys):
    _, world, _, _ = default_world
    out = tmp_path / "out"
    owner = json.loads((world / "records.jsonl").read_text().splitlines()[0])["owner"]
    command, state = signal_run(
        ["unlearn.py", "--model", str(world / "original"), "--data", str(world / "records.jsonl"), "--forget", owner,
         "--classifier", str(world / "classifier"), "--out", str(out), "--max-new-tokens", "8",
         "--eval-max-new-tokens", "8", "--eval-every", "0", "--iterations", "60", "--save-every", "1"], out,
        signal.SIGTERM)
    done = state["iteration"]
    assert 1 <= done < 60
    assert command[:2] == ["python", "unlearn.py"] and command[-2:] == ["--resume", str(tmp_path / "out.checkpoints")]
    # a changed argument that matters is refused, naming it (in-process: it fails before any work)
    with pytest.raises(SystemExit) as exit:
        run_cli(lambda: unlearn_module.main(command[2:] + ["--lr", "0.5"]))
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: --lr was ") and "not 0.5; resume with the same arguments" in err
    # the printed command (with one more iteration) finishes the run and removes the checkpoints
    command[command.index("--iterations") + 1] = str(done + 1)
    finished = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["iteration"] for l in lines] == list(range(1, done + 2))
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_checkpoint_holds_the_live_state_of_every_setting_that_moves(tiny, world_records, tmp_path, monkeypatch):
    """An adaptive β (target_kl > 0), the stall warning, the retain stream's position and every random state
    change during a run: each checkpoint holds their values at the moment it is written, field by field
    (β as the iteration logged it, not its starting value), and a run resumed from one continues exactly."""
    model, tok = tiny
    owners = owners_of(world_records)
    forget, retain = split_records(world_records, owners[:1])
    classifier = Classifier(copy.deepcopy(model), tok, owners, label_ids=list(range(10, 10 + len(owners))))
    ref = copy.deepcopy(model).requires_grad_(False)
    saved, live = [], []
    real_save = harness.save_checkpoint

    def spy(folder, step, state, args, keep):   # the random states now, as the next iteration will find them
        live.append({"torch": torch.get_rng_state().clone()})
        saved.append(copy.deepcopy(state))
        return real_save(folder, step, state, args, keep)
    monkeypatch.setattr(harness, "save_checkpoint", spy)

    def run(ckpt, state=None):
        policy = copy.deepcopy(model)
        metrics = tmp_path / f"m-{time.time_ns()}.jsonl"
        unlearn(Models(policy, tok, ref, classifier), Task(forget, retain, owners[:1], target=0.01, start=0.02),
                Args(UnlearnConfig(iterations=3, prompts_per_iter=4, eval_every=1, sample_every=0, save_every=1),
                     RolloutConfig(max_new_tokens=8), RewardConfig(kl_coef=0.1, target_kl=0.01, kl_horizon=10),
                     PPOConfig(lr=1e-3, epochs=1, minibatch_size=4, retain_batch_size=4), EvalConfig(max_new_tokens=4)),
                Run(str(metrics), ckpt, {"test": True}, state))
        return policy, [json.loads(line) for line in metrics.read_text().splitlines()]
    whole, lines = run(str(tmp_path / "a"))
    assert [s["iteration"] for s in saved] == [1, 2, 3]
    for state, now, line in zip(saved, live, lines):
        assert state["kl_coef"] == line["kl_coef"] != 0.1                          # β adapted, as logged then
        assert state["metrics"].splitlines()[-1] == json.dumps(line)
        assert state["stalled_at"] == 1 and state["early_stopped"] is False and state["nonfinite_in_a_row"] == 0
        assert torch.equal(state["rng"]["torch"], now["torch"])
        # 8 responses, minibatches of 4: two steps per iteration, each drawing 4 retain records of one pass of 36
        assert state["retain_stream"]["start"] == 8 * line["iteration"]
        assert state["retain_stream"]["order"] == saved[0]["retain_stream"]["order"]
    assert all(torch.equal(v, whole.state_dict()[k]) for k, v in saved[-1]["policy"].items() if k in whole.state_dict())
    resumed, resumed_lines = run(None, load_state(checkpoints(str(tmp_path / "a"))[0]))
    assert_same_weights(resumed, whole)
    assert without_clock(resumed_lines) == without_clock(lines)
