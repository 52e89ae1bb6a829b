"""The harness of a DareU run, out of the algorithm's way: unlearn.py calls each piece by name.

  1. Loop: the bookkeeping around one iteration: resume, the metrics log, the non-finite guard, the
     greedy check's schedule, the early stop and the stall warning, printed samples, the progress bar,
     checkpoints on a schedule and on SIGINT/SIGTERM,
  2. the checks around a run (METHOD.md §6): the target, the refusal of a target the run could reach
     without forgetting, the learning rate by model size, what to change when a run does not forget,
     and, on a GPU, the memory a run needs, before any weight is loaded.
"""
import json
import os
from dataclasses import dataclass

import torch
from tqdm import tqdm

from helpers.cli import (MAX_NONFINITE, SIGNALS, DareuError, Interrupted, checkpoints, rng_state, save_checkpoint,
                         set_rng_state)
from helpers.distributed import all_sum, load_sharded, rank_and_size, save_sharded
from helpers.lora import lora_layers
from helpers.memory import MemoryConfig, check_fits
from helpers.models import adapters_base

# the stall warning (METHOD.md §6): once this share of the iterations has run, a greedy a_F that has
# closed less than this share of the gap from the original's value to the target
STALL_AFTER, STALL_PROGRESS = 1 / 3, 0.1


@dataclass
class Run:
    metrics_path: str                 # metrics.jsonl: one line per iteration
    checkpoint_dir: str | None = None  # where checkpoints go (None: none are written)
    args: dict | None = None          # the run's arguments, saved with each checkpoint (for --resume)
    state: dict | str | None = None   # a loaded checkpoint, or (several processes) its folder: the run continues from it


# ----------------------------------------------------------------------------------------------
# 1. The loop's bookkeeping

class Loop:
    """Everything an iteration leaves behind besides the weights. `learner` holds what a checkpoint must
    restore: the policy (with its value head), the optimizer, the adaptive KL controller, the random
    generators and the retain stream. `with loop:` opens the log and defers signals to the end of an
    iteration; `loop.iterations()` yields the iterations still to run."""

    def __init__(self, cfg, run, learner, target, start, knobs):
        self.cfg, self.run, self.learner, self.target, self.start, self.knobs = cfg, run, learner, target, start, knobs
        # with LoRA only the adapters (and the value head) train, and only they go into a checkpoint
        self.lora = bool(lora_layers(learner["policy"].lm))
        self.trainable = {n for n, p in learner["policy"].named_parameters() if p.requires_grad}
        self.done, self.stopped, self.stalled_at, self.bad_in_a_row, self.metrics = 0, False, None, 0, ""
        self.rank, self.size = rank_and_size()
        if run.state is not None:   # resume: every piece of state the next iteration reads
            self.restore(run.state)

    def restore(self, state):
        lr = self.learner
        if self.size > 1:   # the policy's and AdamW's shards, then this process's own state
            state = load_sharded(state, lr["policy"], lr["optimizer"])
        else:
            lr["policy"].load_state_dict(state["policy"], strict=not self.lora)
            lr["optimizer"].load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], lr["rng"], lr["generator"])
        if lr["retain_stream"]:
            lr["retain_stream"].load_state(state["retain_stream"])
        lr["kl_ctl"].value, self.done, self.stopped, self.stalled_at = (state["kl_coef"], state["iteration"],
                                                                       state["early_stopped"], state["stalled_at"])
        self.bad_in_a_row, self.metrics = state["nonfinite_in_a_row"], state["metrics"]

    def __enter__(self):
        self.log = open(self.run.metrics_path if self.rank == 0 else os.devnull, "w", encoding="utf-8")
        self.log.write(self.metrics)
        self.signals = SIGNALS.deferred()
        self.signals.__enter__()
        return self

    def __exit__(self, *error):
        self.log.close()
        return self.signals.__exit__(*error)

    def iterations(self):
        self.bar = tqdm(range(self.done + 1, self.cfg.iterations + 1), initial=self.done, total=self.cfg.iterations,
                        desc="DareU", dynamic_ncols=True, disable=self.rank > 0)
        return [] if self.stopped else self.bar

    def record(self, it, out, timer):
        """The guard (a skipped step: a non-finite loss, gradient norm, reward or classifier output, never
        reaches the weights; MAX_NONFINITE of them in a row stop the run), then the iteration's metrics line."""
        for s in out["stats"]:
            self.bad_in_a_row = self.bad_in_a_row + 1 if s["nonfinite"] else 0
            if self.bad_in_a_row >= MAX_NONFINITE:
                last = checkpoints(self.run.checkpoint_dir)
                raise DareuError(f"{self.bad_in_a_row} non-finite steps in a row (loss, gradient norm, reward or "
                                 f"classifier output) at iteration {it}; stopped. "
                                 + (f"Last good checkpoint: {last[-1]}" if last else "No checkpoint was saved"))
        timer.lap("update", within={"retain": sum(s.get("retain_seconds", 0.0) for s in out["stats"])})
        good, mask = [s for s in out["stats"] if not s["nonfinite"]], out["mask"]
        line = {"iteration": it, "nonfinite_steps": len(out["stats"]) - len(good)}
        if out["finite"]:
            line.update(score=out["scores"].mean().item(), attribution=out["a_forget"].mean().item(),
                        kl=out["kl"].sum(-1).mean().item(), reward=out["rewards"].sum(-1).mean().item())
        line.update(kl_coef=self.learner["kl_ctl"].value, eos_rate=out["roll"]["has_eos"].float().mean().item(),
                    response_tokens=mask.sum(-1).mean().item())
        if good:
            line.update({k: sum(s[k] for s in good) / len(good) for k in good[0]
                         if k not in ("nonfinite", "retain_seconds")}, first_ratio=good[0]["ratio"])
        line["tokens_per_s"] = mask.sum().item() / (timer.last - timer.start)
        return line

    def check_due(self, it):
        """Whether the greedy answers are checked at iteration `it`: every eval_every, and at the last."""
        return bool(self.cfg.eval_every) and (it % self.cfg.eval_every == 0 or it == self.cfg.iterations)

    def end(self, it, line, out, timer):
        """Write the line; print samples; stop once forgotten, warn once when not forgetting; checkpoint;
        stop on a signal. Returns True when the run stops early."""
        line["seconds"] = timer.rounded()   # where the iteration's time went
        text = json.dumps(line) + "\n"
        self.metrics += text   # the checkpoint's copy of metrics.jsonl
        self.log.write(text)
        self.log.flush()
        self.done = it
        if self.cfg.sample_every and it % self.cfg.sample_every == 0 and out["finite"]:
            for j in range(min(2, len(out["roll"]["prompts"]))):
                tqdm.write(f"  [{it}] Q: {out['roll']['prompts'][j]}\n       A: {out['roll']['texts'][j]}\n"
                           f"       a_F {out['a_forget'][j]:.3f}  KL {out['kl'][j].sum():.2f}")
        greedy_a = line.get("greedy_attribution")
        if greedy_a is not None:
            if self.target is not None and self.cfg.stop_on != "never" and greedy_a <= self.target:
                tqdm.write(f"early stop at iteration {it}: greedy forget attribution {greedy_a:.3f} <= "
                           f"{self.target:.3f}")
                self.stopped = True
            elif (None not in (self.start, self.target) and self.stalled_at is None
                  and stalled(self.start, greedy_a, self.target, it, self.cfg.iterations)):
                self.stalled_at = it
                tqdm.write(f"warning: not forgetting: greedy forget a_F {greedy_a:.3f} after {it} of "
                           f"{self.cfg.iterations} iterations (original {self.start:.3f}, target {self.target:.3f}). "
                           f"{self.knobs}")
        self.bar.set_postfix(a_F=f"{line.get('attribution', float('nan')):.3f}", skipped=line["nonfinite_steps"],
                             **({"greedy": f"{greedy_a:.3f}"} if greedy_a is not None else {}),
                             **({"STALLED": f"since {self.stalled_at}"} if self.stalled_at else {}))
        # with --save-every, every save_every iterations and at the end; always before stopping on a signal
        # (a completed run without --save-every writes none: AdamW's state is twice the model)
        every, signal = self.cfg.save_every, SIGNALS.received
        if self.size > 1 and all_sum(float(bool(signal))) and not signal:   # all processes stop at one iteration
            signal = SIGNALS.received = 15
        if self.run.checkpoint_dir and ((every and (it % every == 0 or it == self.cfg.iterations or self.stopped))
                                        or signal):
            self.save(it)
        if signal:
            raise Interrupted(signal)
        return self.stopped

    def save(self, it):
        lr = self.learner
        state = {"rng": rng_state(lr["rng"], lr["generator"]),
                 "retain_stream": lr["retain_stream"].state() if lr["retain_stream"] else None,
                 "kl_coef": lr["kl_ctl"].value, "iteration": it, "early_stopped": self.stopped,
                 "stalled_at": self.stalled_at, "nonfinite_in_a_row": self.bad_in_a_row, "metrics": self.metrics}
        if self.size > 1:   # each process writes its shards and its own state into one checkpoint
            save_sharded(self.run.checkpoint_dir, it, lr["policy"], lr["optimizer"], state, self.run.args, self.cfg.keep)
            return
        save_checkpoint(self.run.checkpoint_dir, it, {
            "policy": {k: v for k, v in lr["policy"].state_dict().items() if k in self.trainable or not self.lora},
            "optimizer": lr["optimizer"].state_dict(), **state}, self.run.args, self.cfg.keep)


def check_shares(args, n_questions, size):
    """Several processes split every batch in equal shares, stepping together: refuse numbers that do not."""
    counts = {"--prompts-per-iter (or the forget questions, if fewer)": min(args.unlearn.prompts_per_iter, n_questions),
              "--minibatch-size": args.ppo.minibatch_size, "--retain-batch-size": args.ppo.retain_batch_size}
    for flag, n in counts.items():
        if n % size:
            raise DareuError(f"--fsdp over {size} processes: {flag} {n} is not a multiple of {size}")


def stalled(start, now, target, it, iterations):
    """Not forgetting: it ≥ STALL_AFTER·iterations and start − now < STALL_PROGRESS·(start − target)."""
    return it >= STALL_AFTER * iterations and start - now < STALL_PROGRESS * (start - target)


# ----------------------------------------------------------------------------------------------
# 2. The checks around a run (METHOD.md §6)

def knobs(ppo_cfg, reward_cfg):
    """What to change when a run does not forget."""
    return (f"Knobs: a larger --lr (now {ppo_cfg.lr:g}), a smaller --kl-coef (now {reward_cfg.kl_coef:g}), more "
            f"--epochs (now {ppo_cfg.epochs}) or --iterations, or a stronger classifier")


def default_lr(weights, lora):
    """(learning rate, where it comes from) when --lr is not given, by model size and training mode. Under
    1B weights it was measured (bench/defaults_sweep.py: 1e-4 reached the target on 0.8M- and
    135M-weight models, where 1e-5 never moved them); from 1B on these are starting points from the
    literature, not measured here: RL fine-tuning of 7-8B models runs at 1e-6 to 2e-6 (GRPO),
    open-unlearning's loss baselines at 1e-5, and LoRA usually at about ten times full fine-tuning's."""
    if weights < 1e9:
        return 1e-4, "measured on 0.8M- and 135M-weight models (bench/results/defaults_sweep_*.md)"
    return ((1e-5, "a literature starting point for LoRA on billion-weight models, not measured here") if lora else
            (1e-6, "a literature starting point for full fine-tuning of billion-weight models, not measured here"))


def resolve_target(cfg, results, probes):
    """(target, retain level, where the level comes from). The retain level is the a_F of answers that
    carry no forget owner's information: the retain model's greedy forget answers, or, without one, the
    original's answers to the other owners' questions, or, without those (no --data), the classifier's
    a_F on `probes` ({text: a_F} of fixed texts that carry no owner's information). The target is
    --target-attribution when given, else max(2 × level, 0.15): a classifier's a_F on unattributable
    answers is noisy, and the floor keeps a near-zero level from asking for more than forgetting."""
    if "retain" in results:
        level, source = results["retain"]["forget_attribution"], "the retain model's forget answers"
    elif results["original"]["retain_attribution"] is not None:
        level, source = results["original"]["retain_attribution"], "the original's answers to other owners' questions"
    else:
        level, source = sum(probes.values()) / len(probes), f"{len(probes)} texts that carry no owner's information"
    return (max(2 * level, 0.15) if cfg.target_attribution is None else cfg.target_attribution), level, source


def check_target(original, target, level, source, cfg):
    """Before PPO: refuse (DareuError) a target that does not lie below `original`, the original's greedy
    forget a_F on the questions the stop is judged on, by at least cfg.min_signal. Otherwise the run could
    "reach" its target without forgetting anything (an original at 0.90 with a retain level of 0.46 gets a
    target of 0.92), and a classifier that rates the original's answers no higher than answers without
    forget information would give the reward no signal."""
    print(f"classifier: forget a_F {original:.3f} on the original's answers, {level:.3f} on {source}")
    how = ("--target-attribution" if cfg.target_attribution is not None else
           f"max(2 × {level:.3f}, 0.15), {level:.3f} the a_F of {source}")
    if original - target < cfg.min_signal - 1e-9:   # (to float rounding: 0.9 − 0.8 is 0.0999…)
        raise DareuError(f"the target a_F {target:.3f} ({how}) is not below the original's greedy forget a_F "
                         f"{original:.3f} by --min-signal {cfg.min_signal:g}: the run could reach it without "
                         f"forgetting. Train a stronger classifier (attribution.py: a pretrained --base, more "
                         f"--epochs), or give a lower --target-attribution")


def check_memory(args, cfg, rollout_cfg, ppo_cfg, lora_cfg, dtype):
    """On a GPU, before any weight is loaded: refuse a run whose peak, predicted from the model's config
    (helpers/memory.py; per GPU under --fsdp), exceeds the device's memory, naming the flags that fit."""
    if torch.device(args.device).type != "cuda":
        return
    config = os.path.join(adapters_base(args.model) or args.model, "config.json")
    on_device = (args.classifier_device or args.device) == args.device
    classifier = os.path.join(adapters_base(args.classifier) or args.classifier, "config.json") if on_device else "none"
    check_fits(MemoryConfig(
        model_config=config, lora=lora_cfg is not None, gradient_checkpointing=args.gradient_checkpointing,
        dtype=str(dtype).replace("torch.", ""), prompts_per_iter=cfg.prompts_per_iter,
        samples_per_prompt=cfg.samples_per_prompt, minibatch_size=ppo_cfg.minibatch_size,
        retain_batch_size=ppo_cfg.retain_batch_size, generate_batch=rollout_cfg.batch_size,
        response_len=rollout_cfg.max_new_tokens or MemoryConfig.response_len, classifier_config=classifier,
        processes=rank_and_size()[1],
        **({"lora_rank": lora_cfg.rank, "lora_targets": lora_cfg.targets} if lora_cfg else {})),
        torch.cuda.get_device_properties(args.device).total_memory)
