"""GPU step: DareU iterations at the default batch on a real architecture, for peak memory and speed.

What a user with one GPU needs to know before spending hours: does the paper's setting fit, and how
long is an iteration. Weights do not matter for either, so nothing is downloaded:
  1. a randomly initialised model of a real architecture (default: Llama-2-7B's configuration) in
     bfloat16, made trainable as unlearn.py does (LoRA rank 16 + gradient checkpointing by default),
  2. a word-level tokenizer with one token per vocabulary id (a random model samples any id),
  3. owner-labelled questions from the synthetic world (16 owners, 6 forgotten: 72 forget questions,
     so an iteration samples unlearn.py's default 64 prompts × 2), a small random classifier LLM,
  4. `--iterations` DareU iterations with unlearn.py's defaults otherwise (4 PPO epochs, minibatch 16,
     retain batch 16), responses up to `--max-new-tokens` (107: the fitted TOFU forget10 length with
     Llama-2's tokenizer; a random model seldom stops early, so this is the worst case),
  5. bench/results/gpu_step.json: peak GPU memory, seconds per iteration, and per phase its seconds and
     tokens/s (response tokens of the rollout / phase seconds), from the last iteration (the first
     pays for CUDA's warm-up).
It runs on the GPU machine's own torch and transformers (nothing pinned is needed), under 8 minutes.

    python bench/gpu_step.py                                   # on a CUDA machine
    python bench/gpu_step.py --model-config tiny --device cpu --iterations 1 --max-new-tokens 8   # a smoke run
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from attribution import Classifier  # noqa: E402
from evaluate import EvalConfig  # noqa: E402
from helpers.cli import HelpFormatter, run_cli  # noqa: E402
from helpers.lora import LoraConfig, add_lora  # noqa: E402
from helpers.memory import CONFIGS, load_config  # noqa: E402
from helpers.models import autocast, checkpoint_layers, ensure_pad_token, frozen_reference  # noqa: E402
from helpers.records import owners_of, split_records, synthetic_world  # noqa: E402
from helpers.run import Run, default_lr  # noqa: E402
from ppo import PPOConfig  # noqa: E402
from reward import RewardConfig  # noqa: E402
from rollout import RolloutConfig  # noqa: E402
from unlearn import Args, Models, Task, UnlearnConfig, unlearn  # noqa: E402


def word_tokenizer(vocab_size, records):
    """A tokenizer with a token for every id below vocab_size ("w0", "w1", …; EOS, pad and the words
    of the questions among them) plus one label token per owner for the classifier."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = ["<eos>", "<pad>", "<unk>"] + sorted({w for r in records for w in r["question"].split()})
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words[:vocab_size])}, unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.WhitespaceSplit(), decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                        padding_side="left")
    tokenizer.add_tokens([f"<|owner_{k}|>" for k in range(len(owners_of(records)))], special_tokens=True)
    return tokenizer


def random_model(name, device, dtype, seed, **changes):
    """A randomly initialised model of bench/memory.py's embedded config `name` (with `changes`), made
    directly on `device` in `dtype`; id 0 is EOS and BOS, 1 is pad (word_tokenizer's)."""
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    config = load_config(name)
    for field, value in dict(changes, bos_token_id=0, eos_token_id=0, pad_token_id=1).items():
        setattr(config, field, value)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return AutoModelForCausalLM.from_config(config).eval()
    finally:
        torch.set_default_dtype(default)


def main():
    p = argparse.ArgumentParser(description="DareU iterations on a random real-architecture model: peak GPU memory "
                                            "and speed per phase.", formatter_class=HelpFormatter)
    p.add_argument("--model-config", default="llama2-7b", choices=list(CONFIGS),
                   help="the architecture (bench/memory.py's embedded configs)")
    p.add_argument("--device", default="cuda", help="torch device")
    p.add_argument("--iterations", type=int, default=2, help="DareU iterations (the last one is reported)")
    p.add_argument("--max-new-tokens", type=int, default=107, help="rollout response length limit")
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA rank 16")
    p.add_argument("--no-checkpointing", action="store_true", help="keep every layer's activations")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "gpu_step.json"), help="JSON output")
    args = p.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    start = time.time()
    # 1-3. data, tokenizer, policy (LoRA + checkpointing as unlearn.py makes them), classifier
    records = synthetic_world(n_owners=16, seed=0)
    owners = owners_of(records)
    forget, retain = split_records(records, owners[-6:])
    tokenizer = word_tokenizer(CONFIGS[args.model_config]["vocab_size"], records)
    model = random_model(args.model_config, args.device, dtype, seed=0)
    ensure_pad_token(tokenizer, model)
    if not args.full:
        add_lora(model, LoraConfig(rank=16))
    else:
        model.float()   # full fine-tuning keeps float32 master weights, as unlearn.py does
    if not args.no_checkpointing:
        checkpoint_layers(model)
    reference = frozen_reference(model)
    clf_model = random_model("tiny", args.device, dtype, seed=1, hidden_size=256, intermediate_size=512,
                             vocab_size=len(tokenizer))
    classifier = Classifier(clf_model.requires_grad_(False), tokenizer, owners,
                            tokenizer.convert_tokens_to_ids([f"<|owner_{k}|>" for k in range(len(owners))]))
    built = time.time() - start
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # 4. DareU iterations with unlearn.py's defaults
    cfg = UnlearnConfig(iterations=args.iterations, eval_every=0, sample_every=0)
    n_responses = min(cfg.prompts_per_iter, len(forget)) * cfg.samples_per_prompt
    with tempfile.TemporaryDirectory() as tmp, autocast(args.device, dtype):
        metrics_path = os.path.join(tmp, "metrics.jsonl")
        unlearn(Models(model, tokenizer, reference, classifier), Task(forget, retain, owners[-6:]),
                Args(cfg, RolloutConfig(max_new_tokens=args.max_new_tokens), RewardConfig(),
                     PPOConfig(lr=default_lr(model.num_parameters(), not args.full)[0]), EvalConfig()),
                Run(metrics_path))
        with open(metrics_path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f]
    # 5. report the last iteration
    last = lines[-1]
    tokens = last["response_tokens"] * n_responses
    result = {
        "model_config": args.model_config, "device": torch.cuda.get_device_name() if args.device.startswith("cuda")
        else args.device, "dtype": str(dtype).replace("torch.", ""), "lora_rank": None if args.full else 16,
        "gradient_checkpointing": not args.no_checkpointing, "responses_per_iteration": n_responses,
        "max_new_tokens": args.max_new_tokens, "mean_response_tokens": last["response_tokens"],
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if args.device.startswith("cuda") else None,
        "seconds_per_iteration": sum(last["seconds"].values()),
        "phases": {k: {"seconds": v, "response_tokens_per_s": tokens / v if v else None} for k, v in last["seconds"].items()},
        "iterations": [{"seconds": sum(l["seconds"].values()), "first_ratio": l.get("first_ratio")} for l in lines],
        "build_seconds": built, "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__}}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"{args.model_config} on {result['device']}: {result['seconds_per_iteration']:.1f} s per iteration, peak "
          f"{result['peak_gpu_memory_gb'] or 0:.1f} GB; " + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in
                                                                   result["phases"].items()) + f"; wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
