"""DareU: make a model forget data owners by de-attribution (METHOD.md §1–6).

    python unlearn.py                                   # the embedded default: a synthetic world, CPU
    python unlearn.py --model M --forget FORGET.jsonl   # your model, the forget owners' records

PPO on the model's own answers to the forget owners' questions: the reward is minus the probability
that the classifier LLM attributes an answer to a forget owner, with a per-token KL penalty to the
original model and a retain-set distillation term. Read in this order:
  `iteration`  one DareU iteration, the algorithm top to bottom (METHOD.md §4): sample, score
               log-probs, reward, advantages, K epochs of clipped PPO with retain distillation;
  `unlearn`    the loop: iterations, and the harness around them (helpers/run.py: the metrics log,
               the non-finite guard, greedy checks, early stop and stall warning, checkpoints);
  `main`       the run: inputs checked, models loaded, the report before, the target (METHOD.md §6),
               unlearning, the model written and scored as written.
Outputs, written to a staging folder and moved to --out at the end: the unlearned model and
tokenizer (Hugging Face format), metrics.jsonl, summary.json. Checkpoints go to OUT.checkpoints/
and are deleted once --out is complete.
"""
import argparse
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field

import torch

from attribution import add_classifier_args, check_classifier, classifier_from_args, probe_attribution
from evaluate import (EVAL_CHECKS, EvalConfig, classifier_report, classifier_report_line, evaluate_records, make_set,
                      report_rows)
from helpers.cli import (DareuError, HelpFormatter, add_config_args, add_resume_arg, check_device, check_out_path,
                         checkpointing, config_from_args, load_state, publish, run_cli, staging_dir, write_json)
from helpers.distributed import (all_sum, finish, on_rank_0_first, rank_and_size, same_path, shard, share, start,
                                 write_whole)
from helpers.lora import LORA_CHECKS, LoraConfig
from helpers.models import (PhaseTimer, add_memory_args, add_model_args, autocast, check_model_folder, compute_dtype,
                            dropout_off, forward_logprobs, frozen_reference, load_model, phase_seconds, trainable_model,
                            write_model)
from helpers.prompts import prompt_ids, template_date, template_of
from helpers.records import (Batches, add_data_args, heldout_split, load_records, owners_of, resolve_forget,
                             split_records)
from helpers.report import REPORT_ROWS, describe_run, print_outcome
from helpers.run import Loop, Run, check_memory, check_shares, check_target, default_lr, knobs, resolve_target
from ppo import ADVANTAGES, MIN_SAMPLES, PPO_CHECKS, PPOConfig, ppo_update
from reward import REWARD_CHECKS, AdaptiveKLController, RewardConfig, score_responses, token_rewards
from rollout import (ROLLOUT_CHECKS, PolicyWithValue, RolloutConfig, check_fit, fit_length, generate, rollout,
                     whole_batch)
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


# The embedded default (world.py): knobs that suit its tiny from-scratch model (explicit flags still
# win; --help shows them as "embedded world: ...").
WORLD_DEFAULTS = dict(kl_coef=0.1, epochs=2, iterations=60, eval_every=5, max_new_tokens=32,
                      eval_max_new_tokens=48)
# the report's questions per set, by default: an evenly spaced subset of large sets (TOFU's retain set has
# 3,600; every one is answered three times, 200 tokens each); evaluate.py scores them all
REPORT_QUESTIONS = 200
# arguments a resumed run may change (every other one must equal the interrupted run's)
MAY_CHANGE_ON_RESUME = ("resume", "iterations", "save_every", "keep", "sample_every", "device")


@dataclass
class Args:
    """Every knob of a run, by stage (the flags of `python unlearn.py --help`, grouped the same way)."""
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)   # the greedy checks decode as the report does


@dataclass
class Models:
    model: object        # the policy's causal LM, trained in place
    tokenizer: object
    reference: object    # π_ref, the original: a frozen copy, or the same weights with the adapters off
    classifier: object   # attribution.Classifier: a_F of a response


@dataclass
class Task:
    forget: list                         # the forget owners' records: the rollout's questions
    retain: list                         # the other owners' records: retain distillation (may be empty)
    forget_owners: list                  # whose attribution a_F sums
    target: float | None = None          # stop once the greedy a_F is at most this (None: never)
    start: float | None = None           # the original's greedy a_F (for the stall warning)
    stop_questions: list | None = None   # the questions the greedy a_F is judged on (None: every forget question)


# ----------------------------------------------------------------------------------------------
# The algorithm: one iteration (METHOD.md §4), and the loop around it

def iteration(policy, optimizer, kl_ctl, prompts, models, task, args, retain_stream, generator, timer):
    """One DareU iteration on the forget questions `prompts`; changes the policy (with its value head),
    the optimizer and β in place. Returns what the log needs: the rollout, its mask, scores, a_F,
    per-token rewards and KL, and the PPO steps' statistics ([{"nonfinite": True}]: no update)."""
    # 1. rollout: responses sampled from the current policy, exactly from softmax(z / T) (several processes:
    #    each its share of the prompts)
    roll = rollout(models.model, models.tokenizer, share(prompts), args.unlearn.samples_per_prompt, args.rollout)
    R, T = roll["n_response"], args.rollout.temperature
    timer.lap("rollout")
    # 2. log-probs and values of policy and reference on what was sampled: same padding, positions, T
    with torch.no_grad():
        old = forward_logprobs(policy, roll["input_ids"], roll["attention_mask"], R, T,
                               batch_size=args.ppo.minibatch_size)
        ref = forward_logprobs(models.reference, roll["input_ids"], roll["attention_mask"], R, T,
                               batch_size=args.ppo.minibatch_size)
    timer.lap("logprobs")
    # 3. reward: s = −a_F (or the missing-EOS penalty) at the last token, −β·(log π_θ − log π_ref) on each token
    scores, a_forget = score_responses(models.classifier, roll, task.forget_owners, args.reward)
    rewards, kl = token_rewards(scores, old["logprobs"], ref["logprobs"], roll["response_mask"], kl_ctl.value)
    timer.lap("scoring")
    roll, old, scored = whole_batch(roll, models.tokenizer.pad_token_id, dict(old, rewards=rewards, kl=kl),
                                    dict(scores=scores, a_forget=a_forget))   # several processes: all of it
    mask, finite = roll["response_mask"].float(), bool(torch.isfinite(old["rewards"]).all())
    out = dict(roll=roll, mask=mask, **scored, rewards=old["rewards"], kl=old["kl"], stats=[{"nonfinite": True}],
               finite=finite and bool(torch.isfinite(scored["a_forget"]).all()))
    if out["finite"]:   # a non-finite classifier output or reward never reaches the weights
        # 4. advantages (ppo.ADVANTAGES: GAE on the value head, or a group estimator)
        advantages, returns = ADVANTAGES[args.ppo.advantage](old["rewards"], old["values"], mask, roll["prompt_index"],
                                                             args.ppo)
        # 5. K epochs of clipped PPO on shuffled minibatches, each step with retain distillation; β adapts
        batch = dict(roll, logprobs=old["logprobs"], values=old["values"], returns=returns, advantages=advantages,
                     response_mask=mask)
        out["stats"] = ppo_update(policy, models.reference, optimizer, models.tokenizer, batch, args.ppo, T,
                                  retain_stream, generator)
        kl_ctl.update(old["kl"].sum(-1).mean().item(), len(roll["prompts"]))
    return out


def unlearn(models, task, args, run):
    """Run DareU on models.model in place. Returns (iterations run, early stopped?, iteration of the stall
    warning or None). Every args.unlearn.eval_every iterations the greedy answers to task.stop_questions
    are scored: the run stops once their mean a_F is at most task.target, and warns once when it has
    barely moved from task.start. `run` (helpers/run.py) says where the log and checkpoints go, and
    holds a loaded checkpoint to continue from exactly."""
    cfg = args.unlearn
    torch.manual_seed(cfg.seed + rank_and_size()[0])   # several processes: each samples from its own stream
    rng, generator = random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    policy = dropout_off(PolicyWithValue(models.model))   # in rollout and update alike, so logprobs match
    if rank_and_size()[1] > 1:
        shard(policy.value_head)   # FSDP averages its gradients over the processes, as the model's
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=args.ppo.lr,
                                  weight_decay=0.0)
    kl_ctl = AdaptiveKLController(args.reward)
    retain_stream = Batches(task.retain, args.ppo.retain_batch_size, rng) if task.retain else None
    questions = [r["question"] for r in task.forget]
    learner = dict(policy=policy, optimizer=optimizer, kl_ctl=kl_ctl, rng=rng, generator=generator,
                   retain_stream=retain_stream)
    loop = Loop(cfg, run, learner, task.target, task.start, knobs(args.ppo, args.reward))   # the harness
    with loop:
        for it in loop.iterations():
            timer = PhaseTimer(models.model.device)
            prompts = rng.sample(questions, min(cfg.prompts_per_iter, len(questions)))
            out = iteration(policy, optimizer, kl_ctl, prompts, models, task, args, retain_stream, generator, timer)
            line = loop.record(it, out, timer)
            if loop.check_due(it):
                line["greedy_attribution"] = greedy_attribution(models.model, models.tokenizer, models.classifier,
                                                                task.stop_questions or questions,
                                                                task.forget_owners, args.eval)
                timer.lap("greedy_check")
            if loop.end(it, line, out, timer):
                break
    return loop.done, loop.stopped, loop.stalled_at


# ----------------------------------------------------------------------------------------------
# The run: inputs, models, the report before and after, the target (METHOD.md §6)

def greedy_attribution(model, tokenizer, classifier, questions, forget_owners, eval_cfg):
    """Mean a_F of the greedy answers to `questions`, decoded as the report decodes them (its length and
    batch size): the number the stop and `reached` are judged on. Several processes answer a share each
    (the list padded with repeats to equal shares, which do not count), stepping together."""
    rank, size = rank_and_size()
    mine = share(questions + questions[:-len(questions) % size])
    greedy = generate(model, tokenizer, mine, RolloutConfig(max_new_tokens=eval_cfg.max_new_tokens,
                                                             batch_size=eval_cfg.batch_size), greedy=True)
    counts = torch.tensor([i * size + rank < len(questions) for i in range(len(mine))])
    return (all_sum((classifier.forget_attribution(mine, greedy["texts"], forget_owners) * counts).sum())
            / len(questions)).item()


UNLEARN_CHECKS = dict(iterations=">= 1", prompts_per_iter=">= 1", samples_per_prompt=">= 1",
                      target_attribution="in [0, 1]", stop_on=STOP_ON, min_signal="in [0, 1]", eval_every=">= 0",
                      sample_every=">= 0", seed=">= 0", save_every=">= 0", keep=">= 1")
# every config of a run, with what its flags accept (checked where the flags are parsed)
CHECKS = ((UnlearnConfig, UNLEARN_CHECKS), (RolloutConfig, ROLLOUT_CHECKS), (RewardConfig, REWARD_CHECKS),
          (PPOConfig, PPO_CHECKS), (EvalConfig, EVAL_CHECKS))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="DareU: unlearn data owners by de-attribution (PPO against a "
                                            "classifier LLM). With no --model, runs on the embedded synthetic world "
                                            "(world.py) with the 'embedded world' defaults.",
                                formatter_class=HelpFormatter)
    p.add_argument("--model", help="the model to unlearn: a Hugging Face folder (never modified)")
    p.add_argument("--retain-model", help="a model trained without the forget owners: the report's reference")
    p.add_argument("--holdout", help="records of owners the model never saw: the report's membership attacks")
    p.add_argument("--out", default="unlearned", help="output folder")
    add_resume_arg(p)
    add_data_args(p)
    add_classifier_args(p)
    add_model_args(p)
    add_memory_args(p)
    for (cls, _), title in zip(CHECKS, ("DareU loop", "rollout (rollout.py)", "reward (reward.py)", "PPO (ppo.py)")):
        add_config_args(p, cls, title=title, also=WORLD_DEFAULTS)
    add_config_args(p, EvalConfig, prefix="eval", title="report (evaluate.py)", also=WORLD_DEFAULTS)
    p.set_defaults(eval_max_questions=REPORT_QUESTIONS)
    args = p.parse_args(argv)
    if args.model is None:
        p.set_defaults(**WORLD_DEFAULTS)
        args = p.parse_args(argv)
    return args


def inputs(argv):
    """The arguments, checked before anything heavy runs (inputs are never written to): (flags, Args,
    LoRA config or None, the arguments as given, the checkpoint folder, the checkpoint to resume or None)."""
    flags = parse_args(argv)
    args = Args(*(config_from_args(c, flags, checks) for c, checks in CHECKS[:4]),
                config_from_args(EvalConfig, flags, EVAL_CHECKS, prefix="eval"))
    lora_cfg = config_from_args(LoraConfig, flags, LORA_CHECKS, prefix="lora") if flags.lora else None
    if args.unlearn.samples_per_prompt < MIN_SAMPLES.get(args.ppo.advantage, 1):
        raise DareuError(f"--advantage {args.ppo.advantage} compares the samples of each prompt: give "
                         f"--samples-per-prompt {MIN_SAMPLES[args.ppo.advantage]} or more"
                         + (" (with 2, every sample's advantage is ±1/√2 whatever the reward gap; group_mean and "
                            "rloo keep it)" if args.ppo.advantage == "group" else ""))
    check_device(flags.device)
    check_device(flags.classifier_device or flags.device)
    given = dict(vars(flags))   # the arguments as given, saved with each checkpoint
    ckpt_dir, resume = checkpointing("unlearn.py", argv, flags, MAY_CHANGE_ON_RESUME)
    if flags.fsdp:   # several processes: each its share of every batch (helpers/distributed.py)
        flags.device = flags.classifier_device = start(flags.device)
    if flags.model is None:   # the embedded default
        world, meta = on_rank_0_first(lambda: default_world(flags.seed))
        flags.model, flags.classifier = os.path.join(world, "original"), os.path.join(world, "classifier")
        flags.retain_model = flags.retain_model or os.path.join(world, "retain")
        flags.data = flags.data or os.path.join(world, "records.jsonl")
        flags.forget = flags.forget or ",".join(meta["forget"])
        flags.holdout = flags.holdout or os.path.join(world, "holdout.jsonl")
    if not flags.forget:
        raise DareuError("--model needs --forget: a file of the forget owners' records, or (with --data) their "
                         "names or forget01/05/10")
    if not flags.data and not os.path.isfile(flags.forget):
        raise DareuError(f"--forget {flags.forget}: without --data, give a file of the forget owners' records "
                         "(names and forget01/05/10 are looked up in --data)")
    flags.classifier = flags.classifier or flags.model   # default: the model itself, asked zero-shot
    check_out_path(flags.out, {"--model": flags.model, "--data": flags.data, "--forget": flags.forget,
                               "--holdout": flags.holdout, "--classifier": flags.classifier,
                               "--retain-model": flags.retain_model})
    for path in (flags.model, flags.classifier, flags.retain_model):
        if path:
            check_model_folder(path)
    return flags, args, lora_cfg, given, ckpt_dir, resume


def main(argv=None):
    start = time.time()
    # 0. inputs, and the records: the forget owners', the others' (none without --data), and (--stop-on
    #    heldout) the forget questions the stop is judged on instead of the report
    flags, args, lora_cfg, given, ckpt_dir, resume = inputs(argv)
    cfg = args.unlearn
    records = load_records(flags.data or flags.forget)
    owners = resolve_forget(flags.forget, records) if flags.data else owners_of(records)
    forget, retain = split_records(records, owners)
    reported, held = heldout_split(forget, HELDOUT_SHARE, cfg.seed) if cfg.stop_on == "heldout" else (forget, [])
    check_shares(args, len(forget), rank_and_size()[1])   # several processes: equal shares of every batch
    holdout = load_records(flags.holdout) if flags.holdout else None   # non-members, for the membership attacks
    if not retain:
        print("no --data: no retain records, so no retain distillation and no retain questions in the report; the "
              "retain level comes from " + ("the retain model" if flags.retain_model else
                                            "the classifier's a_F on texts that carry no owner's information"))
    check_classifier(flags.classifier, owners)
    dtype = compute_dtype(flags.dtype, flags.device, train=True)
    check_memory(flags, cfg, args.rollout, args.ppo, lora_cfg, dtype)

    # 1. models: the policy starts as the original (float32 master weights, or frozen weights + LoRA adapters);
    #    the reference stays the original (a frozen copy, or the same weights with the adapters off)
    model, tokenizer = trainable_model(flags.model, flags.device, dtype, lora_cfg, flags.gradient_checkpointing,
                                       flags.template, cfg.seed)
    models = Models(model, tokenizer, frozen_reference(model), classifier_from_args(flags, records, owners))
    if flags.fsdp:   # each process keeps 1/N of the weights (the reference's too, unless it is the model itself)
        shard(model)
        if not lora_cfg:
            shard(models.reference)
    trained, weights = sum(p.numel() for p in model.parameters() if p.requires_grad), model.num_parameters()
    if args.ppo.lr is None:
        args.ppo.lr, why = default_lr(weights, lora_cfg is not None)
        print(f"learning rate {args.ppo.lr:g} (no --lr: {why})")
    print(f"training {trained:,} of {weights:,} weights" + (f" (LoRA rank {lora_cfg.rank})" if lora_cfg else "")
          + ("; gradient checkpointing" if flags.gradient_checkpointing else ""))
    print(f"forgetting {len(owners)} owner(s) ({len(forget)} questions: {', '.join(owners[:5])}"
          f"{' ...' if len(owners) > 5 else ''}); retaining {len(retain)} records")
    print(f"template {template_of(tokenizer)}: {tokenizer.decode(prompt_ids(tokenizer, forget[0]['question']))!r}")
    if not args.rollout.max_new_tokens:
        args.rollout.max_new_tokens, fits = fit_length(tokenizer, [r["answer"] for r in forget])
        print(f"rollout length {args.rollout.max_new_tokens} new tokens: {fits:.1%} of the {len(forget)} forget "
              f"answers fit (1.25 × the length 99 % of them fit in)")

    with autocast(flags.device, dtype):   # forwards in the compute dtype; weights and AdamW stay float32
        # 2. before: the original (and retain) model on forget and retain questions; every model of the report
        #    is held as the policy is (float32 masters, or the base in the compute dtype under LoRA)
        def report(model, tokenizer):
            return evaluate_records(model, tokenizer, reported, retain, args.eval, models.classifier, owners, holdout)
        results = {"original": report(model, tokenizer)}
        if flags.retain_model:
            results["retain"] = report(*load_model(flags.retain_model, flags.device, dtype, masters=lora_cfg is None,
                                                   template=flags.template))
        # 3. the target (the retain level) and the questions it is judged on: the stop during the run and
        #    `reached` after it alike; refused when it does not lie below the original by --min-signal
        target, level, source = resolve_target(cfg, results, probe_attribution(models.classifier, owners))
        stop_questions = ([r["question"] for r in held] if held else
                          make_set("forget", reported, args.eval.max_questions, "")["questions"])
        start_a = (greedy_attribution(model, tokenizer, models.classifier, stop_questions, owners, args.eval) if held
                   else results["original"]["forget_attribution"])
        check_target(start_a, target, level, source, cfg)
        fits = check_fit(model, tokenizer, [r["question"] for r in forget], args.rollout, args.eval.batch_size)
        print(f"target: greedy forget a_F <= {target:.3f}" + (f" (the retain level {level:.3f})"
                                                              if cfg.target_attribution is None else "")
              + f", judged on {len(stop_questions)} {'held-out ' if held else ''}forget questions"
              + (" (no early stop)" if cfg.stop_on == "never" else ""))

        # 4. unlearn, writing into a staging folder that becomes --out only when complete
        stage = same_path(lambda: staging_dir(flags.out))
        try:
            task = Task(forget, retain, owners, target, start_a, stop_questions)
            run = Run(os.path.join(stage, "metrics.jsonl"), ckpt_dir, given,
                      (resume if flags.fsdp else load_state(resume)) if resume else None)
            iterations, stopped, stalled_at = unlearn(models, task, args, run)
            # 5. after: the model as written (merged in float32, or the adapters alone), loaded back and scored,
            #    so that the report describes the folder, not the model in memory
            write_whole(model, lambda: trainable_model(flags.model, "cpu", dtype, lora_cfg)[0],
                        lambda m: write_model(m, tokenizer, stage, adapters_of=flags.model if lora_cfg and not
                                              lora_cfg.merge else None))
            del model
            models.model = models.reference = None   # free the policy and its reference
            written = load_model(stage, flags.device, dtype, masters=lora_cfg is None)
            results["unlearned"] = report(*written)
            final_a = (greedy_attribution(*written, models.classifier, stop_questions, owners, args.eval) if held
                       else results["unlearned"]["forget_attribution"])
            reached = final_a <= target
            if cfg.require_target and not reached:
                if ckpt_dir:
                    shutil.rmtree(ckpt_dir, ignore_errors=True)
                raise DareuError(f"target not reached (--require-target): greedy forget a_F {final_a:.3f} > "
                                 f"{target:.3f} after {iterations} iterations; nothing written. "
                                 f"{knobs(args.ppo, args.reward)}")
            summary = report_rows(results, REPORT_ROWS)
            summary.update(forget_owners=owners, iterations=iterations, early_stopped=stopped,
                           target=dict(attribution=target, reached=reached, final=final_a, original=start_a,
                                       judged_on=cfg.stop_on, questions=stop_questions, stalled_at=stalled_at,
                                       retain_level=level, level_from=source),
                           rollout_fits=fits, classifier_report=classifier_report(
                               flags.classifier, models.classifier, owners,
                               [r["per_question"]["forget"] for r in results.values()],
                               unlearned=results["unlearned"]["per_question"]["forget"]),
                           seconds=round(time.time() - start, 1), model=flags.model, classifier=flags.classifier,
                           retain_model=flags.retain_model, data=flags.data, template=template_of(tokenizer),
                           template_date=template_date(tokenizer),
                           rollout_max_new_tokens=args.rollout.max_new_tokens, lr=args.ppo.lr,
                           dtype=str(dtype).replace("torch.", ""), phase_seconds=phase_seconds(run.metrics_path),
                           config={k: v for k, v in vars(flags).items()
                                   if k not in ("model", "classifier", "retain_model", "data")},
                           answers={c: results[c]["per_question"] for c in results})
            if rank_and_size()[0] == 0:   # one process writes
                write_json(os.path.join(stage, "summary.json"), summary)
                describe_run(stage, summary, ["python", "unlearn.py", *(sys.argv[1:] if argv is None else argv)],
                             classifier_report_line(summary["classifier_report"]))   # README.md, curves.png
                publish(stage, flags.out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    shutil.rmtree(ckpt_dir, ignore_errors=True)   # the output is complete: its checkpoints are no longer needed
    print_outcome(summary, flags.out, classifier_report_line(summary["classifier_report"]), knobs(args.ppo, args.reward))
    finish()   # several processes: leave the process group together


if __name__ == "__main__":
    run_cli(main)
