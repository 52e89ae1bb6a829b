"""Shared fixtures: tiny models built locally (no downloads), and the embedded world built once."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TOFU = os.path.join(ROOT, "..", "shared", "data", "tofu")
TOKENIZERS = os.path.join(ROOT, "..", "shared", "data", "tokenizers")

from data import synthetic_world  # noqa: E402
from finetune import tiny_model, train_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def world_records():
    return synthetic_world(n_owners=4, seed=0)


@pytest.fixture(scope="session")
def tiny(world_records):
    """(model, tokenizer): a random-init 2-layer Llama with a BPE tokenizer trained on the world."""
    tokenizer = train_tokenizer([r["question"] + " " + r["answer"] for r in world_records], vocab_size=400)
    model = tiny_model(tokenizer, n_layer=2, d_model=64, seed=0).eval()
    return model, tokenizer


def run_python(args, env=None, cwd=ROOT):
    """Run `python args...` in the repo; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def default_world(tmp_path_factory):
    """The embedded default world (built by unlearn.py's own code, cached in a temp folder) and one
    2-iteration run of `python unlearn.py` on it. Returns (cache dir, world dir, out dir, process)."""
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("runs") / "unlearned"
    proc = run_python(["unlearn.py", "--out", str(out), "--iterations", "2", "--eval-every", "1"],
                   env={"DAREU_CACHE": str(cache)})
    world = next(p for p in cache.iterdir() if p.name.startswith("world-"))
    return cache, world, out, proc


torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
