"""Shared fixtures: tiny models built locally (no downloads), the embedded world built once, and the
CI rule that a skip is a failure."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TOFU = os.path.join(ROOT, "..", "shared", "data", "tofu")
TOKENIZERS = os.path.join(ROOT, "..", "shared", "data", "tokenizers")

from helpers.models import tiny_model, train_tokenizer  # noqa: E402
from helpers.records import synthetic_world  # noqa: E402
from world import default_world as embedded_world  # noqa: E402


@pytest.fixture(scope="session")
def world_records():
    return synthetic_world(n_owners=4, seed=0)


@pytest.fixture(scope="session")
def tiny(world_records):
    """(model, tokenizer): a random-init 2-layer Llama with a BPE tokenizer trained on the world."""
    tokenizer = train_tokenizer([r["question"] + " " + r["answer"] for r in world_records], vocab_size=400)
    model = tiny_model(tokenizer, n_layer=2, d_model=64, seed=0).eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_folders(tiny, tmp_path_factory):
    """Two random tiny models saved as Hugging Face folders: {"original": path, "retain": path}."""
    _, tokenizer = tiny
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for seed, name in enumerate(["original", "retain"]):
        paths[name] = str(root / name)
        tiny_model(tokenizer, n_layer=2, d_model=64, seed=seed).save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths


def run_python(args, env=None, cwd=ROOT, timeout=600):
    """Run `python args...` in the repo; returns the CompletedProcess (text). A run past `timeout`
    fails the test with the command and the end of its output, not a bare TimeoutExpired."""
    try:
        return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:
        tail = "\n".join(x.decode(errors="replace") if isinstance(x, bytes) else x
                         for x in (e.stdout, e.stderr) if x)[-3000:]
        pytest.fail(f"timed out after {timeout} s running `python {' '.join(args)}`; its last output:\n{tail}",
                    pytrace=False)


@pytest.fixture(scope="session")
def default_world(tmp_path_factory):
    """The embedded default world and one 2-iteration run of `python unlearn.py` on it. The world is
    built here, in the test process, by world.default_world (the slow part: minutes on a loaded
    machine), so the timed subprocess only runs DareU on the cached world.
    Returns (cache dir, world dir, out dir, process)."""
    cache = tmp_path_factory.mktemp("cache")
    world = type(cache)(embedded_world(seed=0, cache=str(cache))[0])   # where `unlearn.py` (seed 0) looks for it
    out = tmp_path_factory.mktemp("runs") / "unlearned"
    proc = run_python(["unlearn.py", "--out", str(out), "--iterations", "2", "--eval-every", "1"],
                      env={"DAREU_CACHE": str(cache)})
    return cache, world, out, proc


OPTIONAL = "optional fixture"   # in a skip's reason: the one kind of skip CI allows


def tokenizer_path(name):
    """A real tokenizer folder from ../shared/data/tokenizers, or a skip: the project provides these
    tokenizers "where present", so their absence is an allowed skip, also in CI."""
    path = os.path.join(TOKENIZERS, name)
    if not os.path.isdir(path):
        pytest.skip(f"{OPTIONAL}: {path} absent")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true) a skipped test is a failure: a missing fixture (the TOFU data, the SmolLM2 folder,
    a reference package) must not pass unnoticed; only the optional tokenizers may be absent.
    Elsewhere a skip says why."""
    report = (yield).get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if OPTIONAL not in reason:
            report.outcome, report.longrepr = "failed", f"skipped in CI, where every test must run: {reason}"


torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
