"""Expected peak memory of a DareU run on one GPU, from the model's config alone (helpers/memory.py: the
model and its assumptions), printed as a table, and checked against a real run on this CPU.

    python bench/memory.py --model-config llama2-7b --lora true --gradient-checkpointing true
    python bench/memory.py --model-config qwen3-8b          # or a path to a config.json
    python bench/memory.py --check all                      # measured against the real peak on this CPU

--check runs one iteration of the project's own unlearn() (models.trainable_model, frozen_reference)
on a random-init SmolLM2-135M architecture in float32 on the CPU, at a batch 2 cores can run (8 × 2
responses of R = 32, minibatch 8, retain 8, K = 2 epochs; about 4 minutes a mode), in a subprocess:
each phase's peak RSS (VmHWM, reset between phases) above the RSS before the model loads, against
the prediction for the same shapes (without the GPU-only parts: classifier, foreach AdamW).
"""
import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from helpers.memory import MemoryConfig, gib, grid, load_config, predict, table  # noqa: E402

# ----------------------------------------------------------------------------------------------
# --check: the real peak of one unlearn() iteration on this CPU, against the prediction

CHECK = dict(model_config="smollm2-135m", dtype="float32", device="cpu", classifier_config="none",
             prompts_per_iter=8, samples_per_prompt=2, minibatch_size=8, retain_batch_size=8, response_len=32)
MODES = {"full": dict(lora=False, gradient_checkpointing=False),
         "lora+ckpt": dict(lora=True, gradient_checkpointing=True)}


def rss():
    with open("/proc/self/status") as f:
        return {k: int(v) * 1024 for k, v in re.findall(r"(VmRSS|VmHWM):\s+(\d+) kB", f.read())}


def measure(spec):
    """In a fresh process: one unlearn() iteration of the project's code (models.trainable_model,
    frozen_reference, unlearn.unlearn) on a random-init model; each phase's peak RSS above the RSS
    before the model is loaded (bytes). Phases are cut by wrapping the functions unlearn() calls."""
    import ctypes
    import gc
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM

    import unlearn
    from helpers.records import owners_of, split_records, synthetic_world
    from evaluate import EvalConfig
    from helpers.lora import LoraConfig
    from helpers.models import frozen_reference, train_tokenizer, trainable_model
    from ppo import PPOConfig
    from helpers.prompts import encode_qa, prompt_ids
    from helpers.run import Run
    from reward import RewardConfig
    from rollout import RolloutConfig
    torch.set_num_threads(2)
    records = synthetic_world(n_owners=4, seed=0)
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in records], vocab_size=400)
    forget, retain = split_records(records, owners_of(records)[:1])
    forget = forget[:spec["prompts_per_iter"]]      # every question sampled: P is exact
    retain = sorted(retain, key=lambda r: -len(encode_qa(tok, [r["question"]], [r["answer"]])[0][0]))
    retain = retain[:spec["retain_batch_size"]]      # every retain batch is these rows: T_retain exact
    ids, _, answer = encode_qa(tok, [r["question"] for r in retain], [r["answer"] for r in retain])
    shape = dict(prompt_len=max(len(prompt_ids(tok, r["question"])) for r in forget), retain_len=ids.shape[1],
                 retain_answer_len=int(answer.sum(1).max()))

    class StandIn:   # the classifier: a_F from the response length (as tests/test_unlearn.py)
        def forget_attribution(self, questions, responses, forget_owners):
            return torch.tensor([min(1.0, len(r) / 40) for r in responses])

    libc, marks = ctypes.CDLL("libc.so.6"), {}

    def mark(phase):   # the peak since the previous mark is `phase`'s; then a new interval starts (VmHWM := VmRSS)
        libc.malloc_trim(0)
        now = rss()
        marks[phase] = max(marks.get(phase, 0), now["VmHWM"] - base)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return now["VmRSS"] - base

    def cut(fn, before, after):   # fn, its peak recorded under `after` (and what came before it under `before`)
        def wrapper(*args, **kwargs):
            if before:
                mark(before)
            out = fn(*args, **kwargs)
            left = mark(after)
            if after == "optimizer step":   # what stays between steps: weights, gradients, AdamW states
                marks["persistent"] = max(marks.get("persistent", 0), left)
            return out
        return wrapper

    unlearn.rollout = cut(unlearn.rollout, "setup", "generation")
    unlearn.forward_logprobs = cut(unlearn.forward_logprobs, None, "rollout forward")
    torch.Tensor.backward = cut(torch.Tensor.backward, "PPO forward + retain", "PPO backward")
    torch.optim.AdamW.step = cut(torch.optim.AdamW.step, None, "optimizer step")
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(spec["model_config"])
        config.update(dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp)    # a random-init model folder
        tok.save_pretrained(tmp)
        gc.collect()
        libc.malloc_trim(0)
        base = rss()["VmRSS"]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        lora = LoraConfig(rank=spec["lora_rank"]) if spec["lora"] else None
        model, tok = trainable_model(tmp, "cpu", torch.float32, lora, spec["gradient_checkpointing"])
        ref = frozen_reference(model)
        unlearn.unlearn(
            unlearn.Models(model, tok, ref, StandIn()), unlearn.Task(forget, retain, owners_of(forget)),
            unlearn.Args(unlearn.UnlearnConfig(iterations=1, prompts_per_iter=spec["prompts_per_iter"],
                                               samples_per_prompt=spec["samples_per_prompt"], eval_every=0,
                                               sample_every=0),
                         RolloutConfig(max_new_tokens=spec["response_len"]), RewardConfig(),
                         PPOConfig(lr=1e-4, epochs=2, minibatch_size=spec["minibatch_size"],
                                   retain_batch_size=spec["retain_batch_size"]), EvalConfig()),
            Run(os.path.join(tmp, "metrics.jsonl")))
        line = json.loads(open(os.path.join(tmp, "metrics.jsonl")).read().splitlines()[-1])
    mark("end")
    peak = max(v for k, v in marks.items() if k != "persistent")
    return dict(shape, peak=peak, phases=marks, response_tokens=line["response_tokens"])


def check(mode):
    """measure() in a fresh subprocess, the prediction of the same settings, compared per phase."""
    spec = dict(CHECK, **MODES[mode], lora_rank=MemoryConfig.lora_rank)
    # glibc's malloc raises its mmap threshold (up to 32 MB) after a large block is freed, and then keeps
    # freed blocks below it in its arenas: RSS tracks the allocator, not the tensors (LoRA + checkpointing
    # measured 1.45× the prediction). A fixed threshold returns every freed block over 128 kB at once.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    cfg = MemoryConfig(**CHECK, **MODES[mode], first_iteration=True, prompt_len=measured["prompt_len"],
                       retain_len=measured["retain_len"], retain_answer_len=measured["retain_answer_len"])
    pred = predict(cfg)
    rows = {k: (gib(measured["phases"][k]), gib(v)) for k, v in pred["phases"].items()}
    rows["persistent (after a step)"] = (gib(measured["phases"]["persistent"]), gib(sum(pred["parts"].values())))
    rows["peak"] = (gib(measured["peak"]), gib(pred["peak"]))
    print(table(cfg, pred))
    print(f"  {'CPU check ' + mode + ' (GiB)':<28}| measured  predicted  ratio")
    for k, (m, p) in rows.items():
        print(f"  {k:<28}| {m:8.3f}  {p:9.3f}  {m / p:5.3f}")
    return dict(config=dataclasses.asdict(cfg), measured=measured, ratio=round(measured["peak"] / pred["peak"], 3),
                rows_gib={k: dict(measured=m, predicted=p, ratio=round(m / p, 3)) for k, (m, p) in rows.items()})


def gpus_table(cfg, out, capacity=80e9, counts=(1, 2, 4, 8)):
    """Per-GPU peak (GiB) of full fine-tuning and LoRA, with and without checkpointing, on each number of
    GPUs, and the fewest GPUs of `capacity` bytes each mode fits on; printed, and kept in the results."""
    rows = {}
    for model in ("llama2-7b", "qwen3-8b"):
        for mode, (lora, ckpt) in {"full": (False, False), "full+ckpt": (False, True), "lora": (True, False),
                                   "lora+ckpt": (True, True)}.items():
            peaks = {n: predict(dataclasses.replace(cfg, model_config=model, lora=lora, gradient_checkpointing=ckpt,
                                                    processes=n))["peak"] for n in counts}
            rows[f"{model} {mode}"] = {"per_gpu_gib": {n: gib(p) for n, p in peaks.items()},
                                       "fewest_gpus_80gb": next((n for n in counts if peaks[n] <= capacity), None)}
    print(f"per-GPU peak (GiB) under torchrun --fsdp, batch {cfg.prompts_per_iter}×{cfg.samples_per_prompt}, "
          f"minibatch {cfg.minibatch_size}, retain {cfg.retain_batch_size}")
    print(f"  {'model, mode':<24}" + "".join(f"{n:>4} GPU{'s' if n > 1 else ' '}" for n in counts) + "  fewest (80 GB)")
    for name, row in rows.items():
        print(f"  {name:<24}" + "".join(f"{v:>9.1f}" for v in row["per_gpu_gib"].values())
              + f"  {row['fewest_gpus_80gb'] or 'more than ' + str(counts[-1])}")
    results = {}
    if os.path.isfile(out):
        with open(out, encoding="utf-8") as f:
            results = json.load(f)
    results["gpus"] = rows
    with open(out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


def main(argv=None):
    from helpers.cli import HelpFormatter, add_config_args, config_from_args
    p = argparse.ArgumentParser(description="Expected peak GPU memory of a DareU run, from a model config.",
                                formatter_class=HelpFormatter)
    add_config_args(p, MemoryConfig, title="run")
    p.add_argument("--check", choices=[*MODES, "all"], help="measure one iteration on this CPU and compare")
    p.add_argument("--gpus", action="store_true", help="the per-GPU peak on 1, 2, 4 and 8 GPUs (torchrun --fsdp) for "
                                                       "llama2-7b and qwen3-8b, and the fewest that fit 80 GB")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "memory.json"), help="JSON results")
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    cfg = config_from_args(MemoryConfig, args, {})
    if args.gpus:
        return gpus_table(cfg, args.out)
    result = predict(cfg)
    print(table(cfg, result))
    run = {"config": dataclasses.asdict(cfg), "parts_gib": {k: gib(v) for k, v in result["parts"].items()},
           "phases_gib": {k: gib(v) for k, v in result["phases"].items()}, "peak_gib": gib(result["peak"]),
           "grid_peak_gib": grid(cfg)}
    print("  peak by mode (GiB):", ", ".join(f"{k} {v}" for k, v in run["grid_peak_gib"].items()))
    # the results file gathers runs: one entry per model and mode, one per --check mode
    results = {}
    if os.path.isfile(args.out):
        with open(args.out, encoding="utf-8") as f:
            results = json.load(f)
    results[f"{cfg.model_config} {'lora' if cfg.lora else 'full'}{'+ckpt' if cfg.gradient_checkpointing else ''} "
            f"{cfg.dtype}"] = run
    for mode in (MODES if args.check == "all" else [args.check] if args.check else []):
        results[f"check {mode}"] = check(mode)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
