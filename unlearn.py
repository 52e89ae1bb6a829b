"""DareU: make a model forget data owners by de-attribution (METHOD.md §1–6).

    python unlearn.py                                   # the embedded default: a synthetic world, CPU
    python unlearn.py --model M --forget forget10 --data ../shared/data/tofu --classifier C \\
        --retain-model R --out unlearned --device cuda

PPO on the model's own answers to the forget owners' questions: the reward is minus the probability
that the classifier LLM attributes an answer to a forget owner, with a per-token KL penalty to the
original model and a retain-set distillation term. Per iteration:
  1. sample a response to each rollout prompt (rollout.py),
  2. recompute policy and reference logprobs and values over prompt+response (rollout.py),
  3. score with the classifier and build per-token rewards (reward.py),
  4. GAE, whitening, and K epochs of clipped PPO + retain distillation (ppo.py),
  5. log one line to metrics.jsonl; stop once greedy answers are attributed no more than the retain
     model's are (the target), and warn when they have barely moved (the stall warning),
  6. checkpoint (every --save-every iterations and at the end, or on SIGINT/SIGTERM) for --resume.
Outputs, written to a staging folder and moved to --out at the end: the unlearned model and
tokenizer (Hugging Face format), metrics.jsonl, summary.json. Checkpoints go to OUT.checkpoints/
and are deleted once --out is complete.
"""
import argparse
import json
import os
import random
import shutil
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from attribution import add_classifier_args, check_classifier, classifier_from_args, probe_attribution
from evaluate import (EvalConfig, classifier_report, classifier_report_line, evaluate_records, format_table,
                      make_set)
from helpers.cli import (MAX_NONFINITE, SIGNALS, DareuError, HelpFormatter, Interrupted, add_config_args,
                         add_resume_arg, check_device, check_fields, check_out_path, checkpointing, checkpoints,
                         config_from_args, load_state, publish, rng_state, run_cli, save_checkpoint, set_rng_state,
                         staging_dir, write_json)
from helpers.lora import LoraConfig, lora_layers
from helpers.memory import MemoryConfig, check_fits
from helpers.models import (PhaseTimer, adapters_base, add_memory_args, add_model_args, autocast, check_model_folder,
                            compute_dtype, dropout_off, forward_logprobs, frozen_reference, load_model, phase_seconds,
                            trainable_model, write_model)
from helpers.prompts import prompt_ids, template_date, template_of
from helpers.records import (Batches, add_data_args, heldout_split, load_records, owners_of, resolve_forget,
                             split_records)
from ppo import ADVANTAGES, MIN_SAMPLES, PPOConfig, ppo_update
from reward import AdaptiveKLController, RewardConfig, score_responses, token_rewards
from rollout import PolicyWithValue, RolloutConfig, fit_length, generate, rollout
from world import default_world


STOP_ON = ("reported", "heldout", "never")
HELDOUT_SHARE = 0.25   # --stop-on heldout: the share of each forget owner's questions the stop is judged on


@dataclass
class UnlearnConfig:
    iterations: int = 100            # PPO iterations (rollout + update)
    prompts_per_iter: int = 64       # forget questions sampled per iteration (all, if fewer)
    samples_per_prompt: int = 2      # responses sampled per question
    target_attribution: float | None = None  # the greedy forget a_F to reach (None: the retain level, max(2 × level, 0.15))
    stop_on: str = "reported"        # greedy answers the stop is judged on: "reported" (the report's forget questions), "heldout" (a quarter of each forget owner's questions, left out of the report) or "never" (no early stop)
    require_target: bool = False     # exit non-zero, writing nothing, if the target is not reached (for scripts)
    min_signal: float = 0.1          # refuse to start unless the target is below the original's greedy forget a_F by at least this
    eval_every: int = 10             # iterations between greedy checks (early stop, stall warning)
    sample_every: int = 25           # iterations between printed (prompt, response, a_F, KL) samples
    seed: int = 0                    # sampling, shuffling and initialisation seed
    save_every: int = 0              # > 0: a checkpoint every this many iterations and at the end (0: only on SIGINT/SIGTERM)
    keep: int = 2                    # checkpoints kept (the last ones)

    def __post_init__(self):
        check_fields(self, iterations=">= 1", prompts_per_iter=">= 1", samples_per_prompt=">= 1",
                     target_attribution="in [0, 1]", stop_on=STOP_ON, min_signal="in [0, 1]", eval_every=">= 0",
                     sample_every=">= 0", seed=">= 0", save_every=">= 0", keep=">= 1")


# The embedded default (world.py): knobs that suit its tiny from-scratch model (explicit flags still
# win; --help shows them as "embedded world: ...").
WORLD_DEFAULTS = dict(kl_coef=0.1, epochs=2, iterations=60, eval_every=5, max_new_tokens=32,
                      eval_max_new_tokens=48)
# the report's questions per set, by default: an evenly spaced subset of large sets (TOFU's retain set has
# 3,600; every one is answered three times, 200 tokens each); evaluate.py scores them all
REPORT_QUESTIONS = 200
REPORT = ("forget_attribution", "retain_attribution", "forget_rouge", "retain_rouge", "forget_facts", "retain_facts",
          "forget_prob", "retain_prob")
# arguments a resumed run may change (every other one must equal the interrupted run's)
MAY_CHANGE_ON_RESUME = ("resume", "iterations", "save_every", "keep", "sample_every", "device")


def unlearn(model, tokenizer, ref_model, classifier, forget, retain, forget_owners, cfg, rollout_cfg, reward_cfg,
            ppo_cfg, eval_cfg, metrics_path, ckpt_dir=None, args=None, state=None, target=None, start=None,
            stop_questions=None):
    """Run DareU's PPO on `model` in place. Returns (iterations run, early stopped?, iteration of the
    stall warning or None). Every cfg.eval_every iterations the greedy answers to `stop_questions` (default:
    every forget question) are scored: the run stops once their mean a_F is at most `target` (None, or
    cfg.stop_on "never": it does not stop), and warns once if it has barely moved from `start`, the
    original's value on the same questions (None: no warning; see `stalled`).
    With `ckpt_dir`, checkpoints go there (with `args`, the run's arguments) every cfg.save_every iterations
    and at the end (if cfg.save_every), and when a signal stops the run; `state`, a loaded checkpoint, continues a run exactly."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    policy = dropout_off(PolicyWithValue(model))   # in rollout and update alike, so logprobs match
    # with LoRA only the adapters (and the value head) train, and only they go into a checkpoint
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    lora = bool(lora_layers(model))
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=ppo_cfg.lr, weight_decay=0.0)
    kl_ctl = AdaptiveKLController(reward_cfg)
    retain_stream = Batches(retain, ppo_cfg.retain_batch_size, rng) if retain else None   # none without --data
    questions = [r["question"] for r in forget]
    stop_questions = stop_questions or questions
    done, stopped, stalled_at, bad_in_a_row, metrics = 0, False, None, 0, ""
    if state is not None:   # resume: every piece of state the next iteration reads
        policy.load_state_dict(state["policy"], strict=not lora)
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], rng, generator)
        if retain_stream:
            retain_stream.load_state(state["retain_stream"])
        kl_ctl.value, done, stopped, stalled_at = (state["kl_coef"], state["iteration"], state["early_stopped"],
                                                   state["stalled_at"])
        bad_in_a_row, metrics = state["nonfinite_in_a_row"], state["metrics"]
    bar = tqdm(range(done + 1, cfg.iterations + 1), initial=done, total=cfg.iterations, desc="DareU", dynamic_ncols=True)
    with open(metrics_path, "w", encoding="utf-8") as log, SIGNALS.deferred():
        log.write(metrics)
        for it in ([] if stopped else bar):
            timer = PhaseTimer(model.device)
            # 1. rollout: responses to forget questions, sampled from the current policy
            roll = rollout(model, tokenizer, rng.sample(questions, min(cfg.prompts_per_iter, len(questions))),
                           cfg.samples_per_prompt, rollout_cfg)
            prompts, mask, R = roll["prompts"], roll["response_mask"].float(), roll["n_response"]
            timer.lap("rollout")
            # 2. logprobs and values with the same padding, position ids and temperature, in micro-batches
            with torch.no_grad():
                old = forward_logprobs(policy, roll["input_ids"], roll["attention_mask"], R, rollout_cfg.temperature,
                                       batch_size=ppo_cfg.minibatch_size)
                ref = forward_logprobs(ref_model, roll["input_ids"], roll["attention_mask"], R, rollout_cfg.temperature,
                                       batch_size=ppo_cfg.minibatch_size)
            timer.lap("logprobs")
            # 3. reward: s = −a_F (or the missing-EOS penalty) at the last token, −β·KL per token
            scores, a_forget = score_responses(classifier, roll, forget_owners, reward_cfg)
            rewards, kl = token_rewards(scores, old["logprobs"], ref["logprobs"], mask, kl_ctl.value)
            timer.lap("scoring")
            finite = bool(torch.isfinite(a_forget).all() and torch.isfinite(rewards).all())
            # 4. advantages (ppo.ADVANTAGES), then the PPO epochs (skipped when the classifier or the reward
            #    is not finite)
            stats = [{"nonfinite": True}]
            if finite:
                advantages, returns = ADVANTAGES[ppo_cfg.advantage](rewards, old["values"], mask, roll["prompt_index"],
                                                                    ppo_cfg)
                batch = dict(roll, logprobs=old["logprobs"], values=old["values"], returns=returns,
                             advantages=advantages, response_mask=mask)
                stats = ppo_update(policy, ref_model, optimizer, tokenizer, batch, ppo_cfg, rollout_cfg.temperature,
                                   retain_stream, generator)
                kl_ctl.update(kl.sum(-1).mean().item(), len(prompts))
            # guard: a skipped step (non-finite loss, gradient norm, reward or classifier output) never
            # reaches the weights; MAX_NONFINITE of them in a row stop the run
            for s in stats:
                bad_in_a_row = bad_in_a_row + 1 if s["nonfinite"] else 0
                if bad_in_a_row >= MAX_NONFINITE:
                    last = checkpoints(ckpt_dir)
                    raise DareuError(f"{bad_in_a_row} non-finite steps in a row (loss, gradient norm, reward or "
                                     f"classifier output) at iteration {it}; stopped. "
                                     + (f"Last good checkpoint: {last[-1]}" if last else "No checkpoint was saved"))
            timer.lap("update", within={"retain": sum(s.get("retain_seconds", 0.0) for s in stats)})
            # 5. log
            good = [s for s in stats if not s["nonfinite"]]
            line = {"iteration": it, "nonfinite_steps": len(stats) - len(good)}
            if finite:
                line.update(score=scores.mean().item(), attribution=a_forget.mean().item(), kl=kl.sum(-1).mean().item(),
                            reward=rewards.sum(-1).mean().item())
            line.update(kl_coef=kl_ctl.value, eos_rate=roll["has_eos"].float().mean().item(),
                        response_tokens=mask.sum(-1).mean().item())
            if good:
                line.update({k: sum(s[k] for s in good) / len(good) for k in good[0]
                             if k not in ("nonfinite", "retain_seconds")}, first_ratio=good[0]["ratio"])
            line["tokens_per_s"] = mask.sum().item() / (timer.last - timer.start)
            if cfg.eval_every and (it % cfg.eval_every == 0 or it == cfg.iterations):
                line["greedy_attribution"] = greedy_attribution(model, tokenizer, classifier, stop_questions,
                                                                forget_owners, eval_cfg)
                timer.lap("greedy_check")
            line["seconds"] = timer.rounded()   # where the iteration's time went
            text = json.dumps(line) + "\n"
            metrics += text   # the checkpoint's copy of metrics.jsonl
            log.write(text)
            log.flush()
            done = it
            if cfg.sample_every and it % cfg.sample_every == 0 and finite:
                for j in range(min(2, len(prompts))):
                    tqdm.write(f"  [{it}] Q: {prompts[j]}\n       A: {roll['texts'][j]}\n"
                               f"       a_F {a_forget[j]:.3f}  KL {kl[j].sum():.2f}")
            # progress: stop once forgotten; say so once if the greedy a_F has barely moved
            greedy_a = line.get("greedy_attribution")
            if greedy_a is not None:
                if target is not None and cfg.stop_on != "never" and greedy_a <= target:
                    tqdm.write(f"early stop at iteration {it}: greedy forget attribution {greedy_a:.3f} <= {target:.3f}")
                    stopped = True
                elif None not in (start, target) and stalled_at is None and stalled(start, greedy_a, target, it,
                                                                                     cfg.iterations):
                    stalled_at = it
                    tqdm.write(f"warning: not forgetting: greedy forget a_F {greedy_a:.3f} after {it} of "
                               f"{cfg.iterations} iterations (original {start:.3f}, target {target:.3f}). "
                               f"{knobs(ppo_cfg, reward_cfg)}")
            bar.set_postfix(a_F=f"{line.get('attribution', float('nan')):.3f}", skipped=line["nonfinite_steps"],
                            **({"greedy": f"{greedy_a:.3f}"} if greedy_a is not None else {}),
                            **({"STALLED": f"since {stalled_at}"} if stalled_at else {}))
            # 6. checkpoint: with --save-every, every save_every iterations and at the end; always before
            #    stopping on a signal (a completed run without --save-every writes none: AdamW's state is big)
            if ckpt_dir and ((cfg.save_every and (it % cfg.save_every == 0 or it == cfg.iterations or stopped))
                             or SIGNALS.received):
                save_checkpoint(ckpt_dir, it, {
                    "policy": {k: v for k, v in policy.state_dict().items() if k in trainable or not lora},
                    "optimizer": optimizer.state_dict(), "rng": rng_state(rng, generator),
                    "retain_stream": retain_stream.state() if retain_stream else None, "kl_coef": kl_ctl.value, "iteration": it,
                    "early_stopped": stopped, "stalled_at": stalled_at, "nonfinite_in_a_row": bad_in_a_row,
                    "metrics": metrics}, args, cfg.keep)
            if SIGNALS.received:
                raise Interrupted(SIGNALS.received)
            if stopped:
                break
    return done, stopped, stalled_at


# the stall warning (METHOD.md §6): once this share of the iterations has run, a greedy a_F that has
# closed less than this share of the gap from the original's value to the target
STALL_AFTER, STALL_PROGRESS = 1 / 3, 0.1


def stalled(start, now, target, it, iterations):
    """Not forgetting: it ≥ STALL_AFTER·iterations and start − now < STALL_PROGRESS·(start − target)."""
    return it >= STALL_AFTER * iterations and start - now < STALL_PROGRESS * (start - target)


def greedy_attribution(model, tokenizer, classifier, questions, forget_owners, eval_cfg):
    """Mean a_F of the greedy answers to `questions`, decoded as the report decodes them (its length and
    batch size): the number the stop and `reached` are judged on."""
    greedy = generate(model, tokenizer, questions, RolloutConfig(max_new_tokens=eval_cfg.max_new_tokens,
                                                                  batch_size=eval_cfg.batch_size), greedy=True)
    return classifier.forget_attribution(questions, greedy["texts"], forget_owners).mean().item()


def knobs(ppo_cfg, reward_cfg):
    """What to change when a run does not forget."""
    return (f"Knobs: a larger --lr (now {ppo_cfg.lr:g}), a smaller --kl-coef (now {reward_cfg.kl_coef:g}), more --epochs "
            f"(now {ppo_cfg.epochs}) or --iterations, or a stronger classifier")


def check_memory(args, cfg, rollout_cfg, ppo_cfg, lora_cfg, dtype):
    """On a GPU, before any weight is loaded: refuse a run whose peak, predicted from the model's config
    (helpers/memory.py), exceeds the device's memory, naming the flags that fit."""
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
        **({"lora_rank": lora_cfg.rank, "lora_targets": lora_cfg.targets} if lora_cfg else {})),
        torch.cuda.get_device_properties(args.device).total_memory)


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
    """(target, retain level, where the level comes from) (METHOD.md §6). The retain level is the a_F of
    answers that carry no forget owner's information: the retain model's greedy forget answers, or,
    without one, the original's answers to the other owners' questions, or, without those (no --data),
    the classifier's a_F on `probes` ({text: a_F} of fixed texts that carry no owner's information).
    The target is --target-attribution when given, else max(2 × level, 0.15): a classifier's a_F on
    unattributable answers is noisy, and the floor keeps a near-zero level from asking for more than
    forgetting."""
    if "retain" in results:
        level, source = results["retain"]["forget_attribution"], "the retain model's forget answers"
    elif results["original"]["retain_attribution"] is not None:
        level, source = results["original"]["retain_attribution"], "the original's answers to other owners' questions"
    else:
        level, source = sum(probes.values()) / len(probes), f"{len(probes)} texts that carry no owner's information"
    return (max(2 * level, 0.15) if cfg.target_attribution is None else cfg.target_attribution), level, source


def check_fit(model, tokenizer, questions, rollout_cfg, eval_cfg):
    """Before PPO: the share of the original's greedy forget answers that end within the rollout length (the
    rest would earn the missing-EOS penalty whatever they say), printed with a warning under 90 %."""
    greedy = generate(model, tokenizer, questions, RolloutConfig(max_new_tokens=rollout_cfg.max_new_tokens,
                                                                  batch_size=eval_cfg.batch_size), greedy=True)
    fits = greedy["has_eos"].float().mean().item()
    print(f"{fits:.0%} of the original's greedy forget answers end within the rollout length "
          f"({rollout_cfg.max_new_tokens} tokens)" + ("" if fits >= 0.9 else
                                                      "; warning: the rest earn the missing-EOS penalty, whatever "
                                                      "they say: raise --max-new-tokens"))
    return fits


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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="DareU: unlearn data owners by de-attribution (PPO against a "
                                            "classifier LLM). With no --model, runs on the embedded synthetic world "
                                            "(world.py) with the 'embedded world' defaults.",
                                formatter_class=HelpFormatter)
    p.add_argument("--model", help="the model to unlearn: a Hugging Face folder (never modified)")
    p.add_argument("--retain-model", help="a model trained without the forget owners: the report's reference")
    p.add_argument("--out", default="unlearned", help="output folder")
    add_resume_arg(p)
    add_data_args(p)
    add_classifier_args(p)
    add_model_args(p)
    add_memory_args(p)
    for cls, title in ((UnlearnConfig, "DareU loop"), (RolloutConfig, "rollout (rollout.py)"),
                       (RewardConfig, "reward (reward.py)"), (PPOConfig, "PPO (ppo.py)")):
        add_config_args(p, cls, title=title, also=WORLD_DEFAULTS)
    add_config_args(p, EvalConfig, prefix="eval", title="report (evaluate.py)", also=WORLD_DEFAULTS)
    p.set_defaults(eval_max_questions=REPORT_QUESTIONS)
    args = p.parse_args(argv)
    if args.model is None:
        p.set_defaults(**WORLD_DEFAULTS)
        args = p.parse_args(argv)
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    # 0. inputs: checked before anything heavy runs, and never written to
    cfg, rollout_cfg, reward_cfg, ppo_cfg = (config_from_args(c, args) for c in (UnlearnConfig, RolloutConfig, RewardConfig, PPOConfig))
    eval_cfg = config_from_args(EvalConfig, args, prefix="eval")
    lora_cfg = config_from_args(LoraConfig, args, prefix="lora") if args.lora else None
    if cfg.samples_per_prompt < MIN_SAMPLES.get(ppo_cfg.advantage, 1):
        raise DareuError(f"--advantage {ppo_cfg.advantage} compares the samples of each prompt: give --samples-per-prompt "
                         f"{MIN_SAMPLES[ppo_cfg.advantage]} or more" + (" (with 2, every sample's advantage is ±1/√2 "
                                                                      "whatever the reward gap; group_mean and rloo keep "
                                                                      "it)" if ppo_cfg.advantage == "group" else ""))
    check_device(args.device)
    check_device(args.classifier_device or args.device)   # before any work
    given = dict(vars(args))   # the arguments as given, saved with each checkpoint
    ckpt_dir, resume = checkpointing("unlearn.py", argv, args, MAY_CHANGE_ON_RESUME)
    if args.model is None:
        world, meta = default_world(args.seed)
        args.model, args.classifier = os.path.join(world, "original"), os.path.join(world, "classifier")
        args.retain_model = args.retain_model or os.path.join(world, "retain")
        args.data = args.data or os.path.join(world, "records.jsonl")
        args.forget = args.forget or ",".join(meta["forget"])
    if not args.forget:
        raise DareuError("--model needs --forget: a file of the forget owners' records, or (with --data) their "
                         "names or forget01/05/10")
    if not args.data and not os.path.isfile(args.forget):
        raise DareuError(f"--forget {args.forget}: without --data, give a file of the forget owners' records "
                         "(names and forget01/05/10 are looked up in --data)")
    args.classifier = args.classifier or args.model   # default: the model itself, asked zero-shot
    check_out_path(args.out, {"--model": args.model, "--data": args.data, "--forget": args.forget,
                              "--classifier": args.classifier, "--retain-model": args.retain_model})
    records = load_records(args.data or args.forget)
    forget_owners = resolve_forget(args.forget, records) if args.data else owners_of(records)
    forget, retain = split_records(records, forget_owners)
    # the report's forget records, and (--stop-on heldout) the ones the stop is judged on instead
    reported, held = heldout_split(forget, HELDOUT_SHARE, cfg.seed) if cfg.stop_on == "heldout" else (forget, [])
    if not retain:
        print("no --data: no retain records, so no retain distillation and no retain questions in the report; the "
              "retain level comes from " + ("the retain model" if args.retain_model else
                                            "the classifier's a_F on texts that carry no owner's information"))
    for path in (args.model, args.classifier, args.retain_model):
        if path:
            check_model_folder(path)
    check_classifier(args.classifier, forget_owners)
    dtype = compute_dtype(args.dtype, args.device, train=True)

    check_memory(args, cfg, rollout_cfg, ppo_cfg, lora_cfg, dtype)
    # 1. models: the policy starts as the original (float32 master weights, or frozen weights + LoRA adapters);
    #    the reference stays the original (a frozen copy, or the same weights with the adapters off)
    model, tokenizer = trainable_model(args.model, args.device, dtype, lora_cfg, args.gradient_checkpointing,
                                       args.template, cfg.seed)
    ref_model = frozen_reference(model)
    classifier = classifier_from_args(args, records, forget_owners)
    trained, weights = (sum(p.numel() for p in model.parameters() if p.requires_grad),
                        sum(p.numel() for p in model.parameters()))
    if ppo_cfg.lr is None:
        ppo_cfg.lr, why = default_lr(weights, lora_cfg is not None)
        print(f"learning rate {ppo_cfg.lr:g} (no --lr: {why})")
    print(f"training {trained:,} of {weights:,} weights" + (f" (LoRA rank {lora_cfg.rank})" if lora_cfg else "")
          + ("; gradient checkpointing" if args.gradient_checkpointing else ""))
    print(f"forgetting {len(forget_owners)} owner(s) ({len(forget)} questions: {', '.join(forget_owners[:5])}"
          f"{' ...' if len(forget_owners) > 5 else ''}); retaining {len(retain)} records")
    print(f"template {template_of(tokenizer)}: {tokenizer.decode(prompt_ids(tokenizer, forget[0]['question']))!r}")
    if not rollout_cfg.max_new_tokens:
        rollout_cfg.max_new_tokens, fits = fit_length(tokenizer, [r["answer"] for r in forget])
        print(f"rollout length {rollout_cfg.max_new_tokens} new tokens: {fits:.1%} of the {len(forget)} forget "
              f"answers fit (1.25 × the length 99 % of them fit in)")

    with autocast(args.device, dtype):   # forwards in the compute dtype; weights and AdamW stay float32
        # 2. before: the original (and retain) model on forget and retain questions; every model of the report
        #    is held as the policy is (float32 masters, or the base in the compute dtype under LoRA)
        results = {"original": evaluate_records(model, tokenizer, reported, retain, eval_cfg, classifier,
                                                forget_owners)}
        if args.retain_model:
            retain_model, retain_tok = load_model(args.retain_model, args.device, dtype, masters=lora_cfg is None,
                                                  template=args.template)
            results["retain"] = evaluate_records(retain_model, retain_tok, reported, retain, eval_cfg, classifier,
                                                 forget_owners)
            del retain_model
        # 3. the target (the retain level) and the questions it is judged on: the stop during the run and
        #    `reached` after it alike; refused when it does not lie below the original by --min-signal
        target, level, source = resolve_target(cfg, results, probe_attribution(classifier, forget_owners))
        stop_questions = ([r["question"] for r in held] if held else
                          make_set("forget", reported, eval_cfg.max_questions, "")["questions"])
        start_a = (greedy_attribution(model, tokenizer, classifier, stop_questions, forget_owners, eval_cfg) if held
                   else results["original"]["forget_attribution"])
        check_target(start_a, target, level, source, cfg)
        fits = check_fit(model, tokenizer, [r["question"] for r in forget], rollout_cfg, eval_cfg)
        print(f"target: greedy forget a_F <= {target:.3f}" + (f" (the retain level {level:.3f})"
                                                              if cfg.target_attribution is None else "")
              + f", judged on {len(stop_questions)} {'held-out ' if held else ''}forget questions"
              + (" (no early stop)" if cfg.stop_on == "never" else ""))

        # 4. unlearn, writing into a staging folder that becomes --out only when complete
        stage = staging_dir(args.out)
        try:
            iterations, stopped, stalled_at = unlearn(
                model, tokenizer, ref_model, classifier, forget, retain, forget_owners, cfg, rollout_cfg, reward_cfg,
                ppo_cfg, eval_cfg, os.path.join(stage, "metrics.jsonl"), ckpt_dir, given,
                load_state(resume) if resume else None, target=target, start=start_a, stop_questions=stop_questions)
            # 5. after: the model as written (merged in float32, or the adapters alone), loaded back and scored,
            #    so that the report describes the folder, not the model in memory
            write_model(model, tokenizer, stage, adapters_of=args.model if lora_cfg and not lora_cfg.merge else None)
            del model, ref_model
            written, written_tok = load_model(stage, args.device, dtype, masters=lora_cfg is None)
            results["unlearned"] = evaluate_records(written, written_tok, reported, retain, eval_cfg, classifier,
                                                    forget_owners)
            final_a = (greedy_attribution(written, written_tok, classifier, stop_questions, forget_owners, eval_cfg)
                       if held else results["unlearned"]["forget_attribution"])
            reached = final_a <= target
            if cfg.require_target and not reached:
                if ckpt_dir:
                    shutil.rmtree(ckpt_dir, ignore_errors=True)
                raise DareuError(f"target not reached (--require-target): greedy forget a_F {final_a:.3f} > "
                                 f"{target:.3f} after {iterations} iterations; nothing written. "
                                 f"{knobs(ppo_cfg, reward_cfg)}")
            phases = phase_seconds(os.path.join(stage, "metrics.jsonl"))
            columns = list(results)
            summary = {m: {c: results[c][m] for c in columns} for m in REPORT}
            summary.update(forget_owners=forget_owners, iterations=iterations, early_stopped=stopped,
                           target=dict(attribution=target, reached=reached, final=final_a, original=start_a,
                                       judged_on=cfg.stop_on, questions=stop_questions, stalled_at=stalled_at,
                                       retain_level=level, level_from=source),
                           rollout_fits=fits, classifier_report=classifier_report(
                               args.classifier, classifier, forget_owners,
                               [r["per_question"]["forget"] for r in results.values()],
                               unlearned=results["unlearned"]["per_question"]["forget"]),
                           seconds=round(time.time() - start, 1), model=args.model, classifier=args.classifier,
                           retain_model=args.retain_model, data=args.data, template=template_of(tokenizer),
                           template_date=template_date(tokenizer),
                           rollout_max_new_tokens=rollout_cfg.max_new_tokens, lr=ppo_cfg.lr,
                           dtype=str(dtype).replace("torch.", ""),
                           phase_seconds=phases,
                           config={k: v for k, v in vars(args).items()
                                   if k not in ("model", "classifier", "retain_model", "data")},
                           answers={c: results[c]["per_question"] for c in columns})
            write_json(os.path.join(stage, "summary.json"), summary)
            publish(stage, args.out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    shutil.rmtree(ckpt_dir, ignore_errors=True)   # the output is complete: its checkpoints are no longer needed
    print(format_table({m: summary[m] for m in REPORT}, columns))
    print(f"classifier report: {classifier_report_line(summary['classifier_report'])} "
          "(summary.json: classifier_report)")
    print(f"target greedy forget a_F <= {target:.3f}: " + ("reached" if reached else
                                                           f"NOT reached ({final_a:.3f}). {knobs(ppo_cfg, reward_cfg)}"))
    if stalled_at:
        print(f"warning: the greedy forget a_F had barely moved at iteration {stalled_at} (the stall warning)")
    total = sum(phases.values()) or 1.0
    print("where the PPO time went: " + ", ".join(f"{k} {v:.0f} s ({v / total:.0%})" for k, v in phases.items()))
    print(f"saved the unlearned model, metrics.jsonl and summary.json to {args.out} ({summary['seconds']:.0f} s)")


if __name__ == "__main__":
    run_cli(main)
