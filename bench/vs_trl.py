"""Speed side by side: a DareU iteration against TRL's GRPOTrainer doing the same work.

TRL (bench extra: pip install -r bench/requirements.txt) ships no PPO, but GRPOTrainer runs the loop
of `unlearn.py --advantage group`: sample G answers per prompt, score them with a reward function,
recompute the old and reference log-probs, take clipped policy-gradient steps with a KL penalty. Both
get the same work per iteration:
  - the same policy (a folder; default: SmolLM2-135M-Instruct fine-tuned on four TOFU authors by
    bench/real_path.sh), in float32, with the same prompt token ids (ours templated, TRL's given as text);
  - the same forget questions, Q per iteration × G samples, the same maximum new tokens, temperature 1
    with nothing else shaping the sampler, the same stop tokens;
  - the same reward: our classifier's −a_F with the missing-EOS floor (reward.sequence_scores), TRL's
    as a reward function;
  - the same update: one epoch of Q·G / minibatch AdamW steps (lr, gradient clip 1, β 0.05, ε 0.2),
    group advantages (TRL: scale_rewards="group", loss_type="bnpo": a token mean per minibatch, as ours),
    no retain distillation, no gradient checkpointing, no bf16.
Not the same, by design of each: ours puts the KL in the reward (−β·kl_t per token), TRL in the loss
(β·k3); ours also runs its value head (unused by group advantages, one matrix-vector per token).

Each side lives in its own process (its own peak memory), and the two take turns, one iteration each,
so the machine's load hits both alike. Before the first iteration each side checks that it starts
where the other does: our log-probs of the policy equal TRL's on the same batch; on the first
minibatch our ratio is 1 and our KL to the reference 0; TRL's first step logs KL 0 and no clipping.
Reported: seconds per iteration (median after the warm-up iterations), seconds per phase, response
tokens per second, peak memory; bench/results/vs_trl_<device>.{md,json}.

    python bench/vs_trl.py                                  # CPU, the real-path model (bench/real_path.sh)
    python bench/vs_trl.py --device cuda --iterations 8
"""
import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
WORK = os.path.join(ROOT, "bench", "work", "real_path")


def timed(fn, phases, name):
    """fn, adding its seconds to phases[name] (name may be a function of nothing, chosen per call)."""
    def wrapper(*a, **k):
        start = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            key = name() if callable(name) else name
            phases[key] = phases.get(key, 0.0) + time.perf_counter() - start
    return wrapper


def peak_memory_gib(device):
    import torch
    if device.startswith("cuda"):   # "cuda" or "cuda:N"
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # KiB on Linux: the process's peak RSS


def setup(opts):
    """What both sides share: torch's threads and seed; returns the records, the forget records, the forget
    owners and the classifier."""
    import torch
    from attribution import load_classifier
    from helpers.records import load_records
    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    records = load_records(opts.data)
    forget_owners = opts.forget.split(",")
    forget = [r for r in records if r["owner"] in forget_owners]
    classifier = load_classifier(opts.classifier, records, device=opts.device, forget_owners=forget_owners)
    return records, forget, forget_owners, classifier


def trl_reward(classifier, forget_owners, stop_ids, cfg):
    """Our score as a TRL reward function: −a_F of each completion (names masked with its question), the
    floor where it did not end with a stop token or says fewer than cfg.min_words words."""
    import torch
    from reward import sequence_scores

    def reward(prompts, completions, completion_ids, question, **kwargs):
        a_forget = classifier.forget_attribution(question, completions, forget_owners)
        has_eos = torch.tensor([bool(ids) and ids[-1] in stop_ids for ids in completion_ids])
        return sequence_scores(a_forget, {"texts": completions, "has_eos": has_eos}, cfg).tolist()
    return reward


# ----------------------------------------------------------------------------------------------
# Ours: unlearn.iteration, called as unlearn.unlearn calls it, without the harness around it

def ours(opts, conn, root=ROOT):
    """Our side; `root`: the checkout whose stages it imports (--baseline: an older one, beside this one)."""
    sys.path.insert(0, root)
    import torch
    from helpers.models import PhaseTimer, dropout_off, frozen_reference, trainable_model
    from ppo import PPOConfig
    from reward import AdaptiveKLController, RewardConfig
    from rollout import PolicyWithValue, RolloutConfig
    from unlearn import Args, Models, Task, UnlearnConfig, iteration
    records, forget, forget_owners, classifier = setup(opts)
    model, tokenizer = trainable_model(opts.model, opts.device, torch.float32)
    models = Models(model, tokenizer, frozen_reference(model), classifier)
    task = Task(forget=forget, retain=[], forget_owners=forget_owners)
    args = Args(unlearn=UnlearnConfig(prompts_per_iter=opts.prompts, samples_per_prompt=opts.samples, seed=opts.seed),
                rollout=RolloutConfig(max_new_tokens=opts.max_new_tokens, batch_size=opts.prompts * opts.samples),
                reward=RewardConfig(kl_coef=opts.beta),
                ppo=PPOConfig(advantage="group", lr=opts.lr, epochs=1, minibatch_size=opts.minibatch, retain_coef=0.0))
    policy = dropout_off(PolicyWithValue(model))
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=opts.lr, weight_decay=0.0)
    kl_ctl, rng, generator = AdaptiveKLController(args.reward), random.Random(opts.seed), torch.Generator().manual_seed(opts.seed)
    questions = [r["question"] for r in forget]
    conn.send({"ready": True})
    for it in range(opts.iterations):
        conn.recv()
        timer = PhaseTimer(opts.device)
        prompts = rng.sample(questions, opts.prompts)
        out = iteration(policy, optimizer, kl_ctl, prompts, models, task, args, None, generator, timer)
        timer.lap("update")
        first = out["stats"][0]
        conn.send({"seconds": timer.last - timer.start, "phases": timer.rounded(), "tokens": int(out["mask"].sum()),
                   "first_ratio": first.get("ratio"), "first_approx_kl": first.get("approx_kl"),
                   "rollout_kl_max": out["kl"].abs().max().item(), "reward": out["scores"].mean().item(),
                   "steps": len(out["stats"])})
    conn.send({"peak_gib": peak_memory_gib(opts.device)})


# ----------------------------------------------------------------------------------------------
# TRL: GRPOTrainer.train(), paused by a callback after each iteration's k optimizer steps

def trl(opts, conn):
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, GenerationConfig, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    import trl as trl_package
    from helpers.models import ensure_pad_token, forward_logprobs
    from helpers.prompts import chat_text, encode_qa, prompt_ids
    from reward import RewardConfig
    from rollout import stop_ids
    records, forget, forget_owners, classifier = setup(opts)
    tokenizer = AutoTokenizer.from_pretrained(opts.model)
    ensure_pad_token(tokenizer)   # as our load_model does (the real-path model has its own <|pad|>)
    model_stops = stop_ids(tokenizer, argparse.Namespace(generation_config=GenerationConfig.from_pretrained(opts.model)))
    texts = [chat_text(tokenizer, [{"role": "user", "content": r["question"]}], add_generation_prompt=True)
             for r in forget]
    for text, r in zip(texts, forget):   # TRL tokenises the text: it must give our prompt's ids exactly
        if tokenizer(text).input_ids != prompt_ids(tokenizer, r["question"]):
            raise SystemExit(f"TRL's prompt ids differ from ours for {r['question']!r}")
    k = opts.prompts * opts.samples // opts.minibatch
    config = GRPOConfig(
        output_dir=os.path.join(ROOT, "bench", "work", "vs_trl"), use_cpu=opts.device == "cpu", bf16=False, fp16=False,
        gradient_checkpointing=False, model_init_kwargs={"dtype": "float32"}, seed=opts.seed,
        num_generations=opts.samples, per_device_train_batch_size=opts.minibatch, gradient_accumulation_steps=1,
        steps_per_generation=k, num_iterations=1, max_steps=opts.iterations * k,
        learning_rate=opts.lr, lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0,
        beta=opts.beta, epsilon=0.2, loss_type="bnpo", scale_rewards="group", use_bias_correction_kl=False,
        temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
        max_completion_length=opts.max_new_tokens, disable_dropout=True,
        report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True)
    phases, step_logs = {}, []   # seconds per phase of the current iteration; every step's log

    class Pause(TrainerCallback):
        """After every k-th step's log: report the iteration, wait for the next turn."""
        start = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if "loss" not in (logs or {}):
                return
            step_logs.append(dict(logs))
            if state.global_step % k == 0:
                seconds = time.perf_counter() - self.start
                rest = sum(v for p, v in phases.items() if p != "update")
                mine = step_logs[-k:]
                conn.send({"seconds": seconds, "phases": {**{p: round(v, 4) for p, v in phases.items()},
                                                          "update": round(seconds - rest, 4)},
                           "tokens": round(mine[0]["completions/mean_length"] * opts.prompts * opts.samples),
                           "first_kl": mine[0].get("kl"), "first_clip": mine[0].get("clip_ratio/region_mean"),
                           "reward": mine[0].get("reward"), "steps": len(mine)})
                phases.clear()
                if state.global_step < args.max_steps:
                    conn.recv()
                    self.start = time.perf_counter()

    pause = Pause()
    dataset = Dataset.from_dict({"prompt": texts, "question": [r["question"] for r in forget]})
    trainer = GRPOTrainer(model=opts.model, processing_class=tokenizer, args=config, train_dataset=dataset,
                          reward_funcs=trl_reward(classifier, forget_owners, model_stops, RewardConfig()),
                          callbacks=[pause])
    trainer.remove_callback(PrinterCallback)   # the logs go to the driver, not to stdout
    trainer._generate_single_turn = timed(trainer._generate_single_turn, phases, "rollout")
    trainer._calculate_rewards = timed(trainer._calculate_rewards, phases, "scoring")
    logprobs = trainer._get_per_token_logps_and_entropies
    trainer._get_per_token_logps_and_entropies = timed(logprobs, phases, lambda: "update" if torch.is_grad_enabled()
                                                       else "logprobs")
    # both start from the same log-probs: ours and TRL's on the gold answers of the first questions
    ids, mask, answer_mask = encode_qa(tokenizer, [r["question"] for r in forget[:8]], [r["answer"] for r in forget[:8]])
    n = int(answer_mask.sum(-1).max())
    with torch.no_grad():
        theirs = logprobs(trainer.model, ids.to(trainer.model.device), mask.to(trainer.model.device), n)[0]
        mine = forward_logprobs(trainer.model, ids.to(trainer.model.device), mask.to(trainer.model.device), n)["logprobs"]
    where = answer_mask[:, -n:].bool()
    conn.send({"ready": True, "version": trl_package.__version__,
               "logprob_max_diff": (theirs.cpu() - mine.cpu())[where].abs().max().item()})
    conn.recv()
    pause.start = time.perf_counter()
    trainer.train()
    conn.send({"peak_gib": peak_memory_gib(opts.device)})


# ----------------------------------------------------------------------------------------------
# The driver: both sides started, then one iteration each in turn; the table

def summary(rows, warmup):
    kept = rows[warmup:]
    phases = sorted({p for r in kept for p in r["phases"]})
    seconds = [r["seconds"] for r in kept]
    return {"seconds_per_iteration": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "tokens_per_s": sum(r["tokens"] for r in kept) / sum(seconds),
            "phases": {p: statistics.median(r["phases"].get(p, 0.0) for r in kept) for p in phases}}


def main():
    p = argparse.ArgumentParser(description="DareU's iteration against TRL's GRPOTrainer on the same work.")
    p.add_argument("--model", default=os.path.join(WORK, "original"), help="the policy, a Hugging Face folder")
    p.add_argument("--classifier", default=os.path.join(WORK, "classifier_scratch"), help="the attribution classifier")
    p.add_argument("--data", default=os.path.join(WORK, "tofu4.jsonl"), help="the owners' records")
    p.add_argument("--forget", default="tofu_198,tofu_199", help="comma-separated forget owners")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iterations", type=int, default=6, help="iterations per side, the warm-up included")
    p.add_argument("--warmup", type=int, default=1, help="first iterations left out of the medians")
    p.add_argument("--prompts", type=int, default=8, help="forget questions per iteration")
    p.add_argument("--samples", type=int, default=4, help="samples per question")
    p.add_argument("--minibatch", type=int, default=8, help="responses per optimizer step")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--beta", type=float, default=0.05, help="KL coefficient")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of each side")
    p.add_argument("--baseline", help="another checkout (e.g. a git worktree of an older commit): its DareU iteration "
                                      "runs as a third side, for a speed-up's before and after in one run")
    p.add_argument("--out", help="JSON output (default bench/results/vs_trl_<device>.json; the table beside it)")
    opts = p.parse_args()
    for path in (opts.model, opts.classifier, opts.data):
        if not os.path.exists(path):
            sys.exit(f"{path} does not exist: build the real path first (bash bench/real_path.sh), or pass it")
    if opts.iterations <= opts.warmup or (opts.prompts * opts.samples) % opts.minibatch:
        sys.exit("--iterations must exceed --warmup, and --minibatch must divide --prompts × --samples")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx = mp.get_context("spawn")
    sides = {}
    runs = [("dareu", ours, (ROOT,))] + [("dareu_baseline", ours, (opts.baseline,))] * bool(opts.baseline)
    for name, fn, extra in runs + [("trl", trl, ())]:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=fn, args=(opts, child, *extra), daemon=True)
        proc.start()
        sides[name] = dict(conn=parent, proc=proc, ready=parent.recv(), rows=[])
    print(f"ready: TRL {sides['trl']['ready']['version']}, our log-probs − TRL's on the same batch: max "
          f"{sides['trl']['ready']['logprob_max_diff']:.2e}", flush=True)
    for it in range(opts.iterations):
        for name, side in sides.items():   # one iteration each, in turn
            side["conn"].send("go")
            row = side["conn"].recv()
            side["rows"].append(row)
            print(f"{it} {name:5s} {row['seconds']:7.1f} s  {row['tokens']:5d} tokens  "
                  f"{json.dumps({k: round(v, 1) for k, v in row['phases'].items()})}", flush=True)
    for side in sides.values():
        side["peak_gib"] = side["conn"].recv()["peak_gib"]
        side["proc"].join()
    result = {"device": opts.device, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip(), "threads": opts.threads, "trl_version": sides["trl"]["ready"]["version"], "settings": vars(opts),
              "logprob_max_diff": sides["trl"]["ready"]["logprob_max_diff"]}
    import torch
    import transformers
    result.update(torch=torch.__version__, transformers=transformers.__version__)
    for name, side in sides.items():
        result[name] = dict(summary(side["rows"], opts.warmup), peak_gib=side["peak_gib"], iterations=side["rows"])
    for name in sides:
        result[name]["ratio_to_trl"] = result[name]["seconds_per_iteration"] / result["trl"]["seconds_per_iteration"]
        result[name]["tokens_per_s_ratio_to_trl"] = result[name]["tokens_per_s"] / result["trl"]["tokens_per_s"]
    if opts.baseline:
        result["baseline_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=opts.baseline,
                                                   capture_output=True, text=True).stdout.strip()
    first_ours, first_trl = sides["dareu"]["rows"][0], sides["trl"]["rows"][0]
    result["start_checks"] = {"ours_first_ratio": first_ours["first_ratio"],
                              "ours_first_approx_kl": first_ours["first_approx_kl"],
                              "ours_rollout_kl_max": first_ours["rollout_kl_max"],
                              "trl_first_kl": first_trl["first_kl"], "trl_first_clip": first_trl["first_clip"]}
    out = opts.out or os.path.join(ROOT, "bench", "results", f"vs_trl_{opts.device}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    with open(out[:-5] + ".md", "w", encoding="utf-8") as f:
        f.write(table(result))
    print(table(result) + f"wrote {out}")


def table(r):
    s = r["settings"]
    phases = sorted(set(r["dareu"]["phases"]) | set(r["trl"]["phases"]))
    lines = [f"# DareU vs TRL {r['trl_version']} GRPOTrainer, {r['device']} ({r['machine']}, {r['threads']} threads; "
             f"torch {r['torch']}, transformers {r['transformers']})", "",
             f"Same work per iteration: {s['prompts']} questions × {s['samples']} samples, ≤ {s['max_new_tokens']} "
             f"new tokens, {s['prompts'] * s['samples'] // s['minibatch']} AdamW steps of {s['minibatch']}, lr "
             f"{s['lr']}, β {s['beta']}; medians over iterations {s['warmup'] + 1}–{s['iterations']} "
             "(the sides take turns).", "",
             "| | seconds / iteration (min–max) | response tokens / s | peak memory GiB | "
             + " | ".join(f"{p} s" for p in phases) + " |",
             "|---|---|---|---|" + "---|" * len(phases)]
    names = {"dareu": f"DareU ({r['commit']})", "dareu_baseline": f"DareU before ({r.get('baseline_commit')})",
             "trl": "TRL GRPOTrainer"}
    for name in [n for n in names if n in r]:
        x = r[name]
        lines.append(f"| {names[name]} | {x['seconds_per_iteration']:.1f} ({x['min']:.1f}–{x['max']:.1f}) | "
                     f"{x['tokens_per_s']:.1f} | {x['peak_gib']:.2f} | "
                     + " | ".join(f"{x['phases'].get(p, 0.0):.2f}" for p in phases) + " |")
    c = r["start_checks"]
    lines += [""] + [f"{names[n]} ÷ TRL: **{r[n]['ratio_to_trl']:.2f}** seconds per iteration, "
                     f"{r[n]['tokens_per_s_ratio_to_trl']:.2f} × its response tokens per second." for n in names
                     if n in r and n != "trl"] + ["",
              f"Start checks: our log-probs − TRL's on the same batch, max |Δ| {r['logprob_max_diff']:.1e}; ours, "
              f"first minibatch ratio {c['ours_first_ratio']:.6f}, approx-KL {c['ours_first_approx_kl']:.1e}, "
              f"rollout KL to the reference max {c['ours_rollout_kl_max']:.1e}; TRL, first step KL "
              f"{c['trl_first_kl']}, clipped share {c['trl_first_clip']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
