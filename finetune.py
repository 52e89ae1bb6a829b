"""Fine-tuning: build the original and retain models, and run the loss-based unlearning baselines.

One loop, one objective switch (METHOD.md §7). With answer-token log-likelihoods ℓ(y|x) = Σ_t log π_θ(y_t|x,y<t):
  sft       NLL(D)                                  fit the data (original model: all owners;
                                                    retain model: all but the forget owners)
  ga        −NLL(D_F)                               gradient ascent on the forget set
  graddiff  −NLL(D_F) + α NLL(D_R)                  α: --retain-weight, 1 by default
  npo       −(2/β) E log σ(−β (ℓ_θ − ℓ_ref))        on D_F (Zhang et al., 2024), β = 0.1
  npo_gd    npo + α NLL(D_R)
  simnpo    −(2/β') E log σ(−β' ℓ_θ/|y| − γ)        reference-free (Fan et al., 2024), β' = 2.5, γ = 0: the
                                                    paper's TOFU values (with NPO's β = 0.1 its weight 2σ(·)
                                                    stays in [0.76, 1] and it is gradient ascent)
  simnpo_gd simnpo + α NLL(D_R)                     the paper's SimNPO with its retain term
NLL is the mean over answer tokens (prompt and padding masked).

A model is built from scratch (a byte-level BPE tokenizer trained on the data and a tiny Llama
config, helpers/models.py) or from a given Hugging Face model, and saved with save_pretrained, atomically.

    python finetune.py --data ../shared/data/tofu --out models/original              # from scratch
    python finetune.py --data ../shared/data/tofu --exclude forget10 --out models/retain
    python finetune.py --objective npo --model models/original --data ../shared/data/tofu \\
        --forget forget10 --out models/npo
"""
import argparse
import math
import random
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from helpers.cli import (MAX_NONFINITE, SIGNALS, DareuError, HelpFormatter, Interrupted, add_config_args,
                         add_resume_arg, check_device, check_fields, check_out_path, checkpointing, checkpoints,
                         config_from_args, load_state, rng_state, run_cli, save_checkpoint, set_rng_state)
from helpers.distributed import (all_sum, finish, full, load_sharded, rank_and_size, save_sharded, shard, share, start,
                                 write_whole)
from helpers.lora import LORA_CHECKS, LoraConfig, lora_layers, lora_state_dict
from helpers.models import (add_memory_args, add_model_args, answer_logprobs, autocast, check_model_folder,
                            compute_dtype, dropout_off, frozen_reference, save_model, tiny_model, train_tokenizer,
                            trainable_model)
from helpers.prompts import encode_qa, prompt_ids, set_template, template_of
from helpers.records import Batches, add_data_args, owners_of, read_data, resolve_forget, split_records
from helpers.report import model_card

OBJECTIVES = ("sft", "ga", "graddiff", "npo", "npo_gd", "simnpo", "simnpo_gd")
# arguments a resumed run may change (every other one must equal the interrupted run's)
MAY_CHANGE_ON_RESUME = ("resume", "save_every", "keep", "device")


@dataclass
class FinetuneConfig:
    objective: str = "sft"     # sft, ga, graddiff, npo, npo_gd, simnpo or simnpo_gd (the table above)
    epochs: float = 40.0       # passes over the training records (sft) or the forget records (others)
    steps: int | None = None   # the number of optimiser steps instead of epochs (None: from the epochs)
    batch_size: int = 32       # QA pairs per step (forget and retain batches alike)
    lr: float = 2e-3           # peak learning rate: one-cycle, linear warm-up then cosine decay to 0
    warmup: float = 0.1        # fraction of steps spent warming up
    weight_decay: float = 0.01 # AdamW weight decay
    max_grad_norm: float = 1.0 # gradient-norm clip
    npo_beta: float = 0.1      # β of NPO (Zhang et al., 2024)
    simnpo_beta: float = 2.5   # β' of SimNPO (Fan et al., 2024, TOFU)
    simnpo_gamma: float = 0.0  # γ margin of SimNPO (Fan et al., 2024, TOFU)
    retain_weight: float = 1.0 # α: weight of the retain NLL in graddiff, npo_gd and simnpo_gd
    seed: int = 0              # shuffling and initialisation seed
    save_every: int = 0        # > 0: a checkpoint every this many steps and at the end (0: only on SIGINT/SIGTERM)
    keep: int = 2              # checkpoints kept (the last ones)


# what each flag accepts, checked where the flags are parsed (helpers/cli.py)
FINETUNE_CHECKS = dict(objective=OBJECTIVES, epochs="> 0", steps=">= 1", batch_size=">= 1", lr="> 0",
                       warmup="in [0, 1]", weight_decay=">= 0", max_grad_norm="> 0", npo_beta="> 0",
                       simnpo_beta="> 0", simnpo_gamma=">= 0", retain_weight=">= 0", seed=">= 0", save_every=">= 0", keep=">= 1")


def nll(model, tokenizer, batch):
    """Mean negative log-likelihood over all answer tokens of the batch (several processes: this one's
    share of the rows, over the answer tokens of them all)."""
    logp, _ = answer_logprobs(model, tokenizer, share(batch))
    return -logp.sum() / encode_qa(tokenizer, [r["question"] for r in batch], [r["answer"] for r in batch])[2].sum()


def objective_loss(cfg, model, ref_model, tokenizer, batch, retain_batch):
    """The loss of one step for cfg.objective (table in the module docstring); `batch` is the
    training batch for sft and the forget batch D_F otherwise."""
    if cfg.objective == "sft":
        return nll(model, tokenizer, batch)
    if cfg.objective in ("ga", "graddiff"):
        loss = -nll(model, tokenizer, batch)
    elif cfg.objective in ("npo", "npo_gd"):   # (means over the whole batch's rows, as nll's)
        logp, _ = answer_logprobs(model, tokenizer, share(batch))
        with torch.no_grad():
            ref_logp, _ = answer_logprobs(ref_model, tokenizer, share(batch))
        loss = -(2 / cfg.npo_beta) * F.logsigmoid(-cfg.npo_beta * (logp - ref_logp)).sum() / len(batch)
    else:  # simnpo, simnpo_gd
        logp, n = answer_logprobs(model, tokenizer, share(batch))
        loss = -(2 / cfg.simnpo_beta) * F.logsigmoid(-cfg.simnpo_beta * logp / n - cfg.simnpo_gamma).sum() / len(batch)
    if cfg.objective in ("graddiff", "npo_gd", "simnpo_gd"):
        loss = loss + cfg.retain_weight * nll(model, tokenizer, retain_batch)
    return loss


def finetune(model, tokenizer, records, cfg, retain_records=None, desc="finetune", ckpt_dir=None, args=None,
             state=None, stop=None):
    """Train `model` in place. For sft, `records` is the training set; for the unlearning
    objectives it is the forget set and `retain_records` the retain set. Returns the last loss.
    `stop(step)`, if given, is asked after each step and ends the run early by returning True.
    With `ckpt_dir`, checkpoints go there (with `args`, the run's arguments) every cfg.save_every steps and
    at the end (if cfg.save_every), and when a signal stops the run; `state`, a loaded checkpoint, continues a run exactly."""
    if not records:
        raise DareuError("no training records")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    ref_model = frozen_reference(model) if cfg.objective.startswith("npo") else None
    size = rank_and_size()[1]
    if size > 1:   # several processes (torchrun --fsdp): each keeps 1/N of the weights, and takes 1/N of each batch
        for module in (model, *([ref_model] if ref_model is not None and not lora_layers(model) else [])):
            shard(module)
    trainable = [p for p in model.parameters() if p.requires_grad]   # with LoRA, the adapters only
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * len(records) / cfg.batch_size))
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, int(cfg.warmup * steps))
    # one-cycle: lr(s) = lr·s/warmup while warming up, then lr·½(1 + cos(π·progress))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: s / warmup if s < warmup else
                                                 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
    stream = Batches(records, cfg.batch_size, rng)
    retain_stream = Batches(retain_records, cfg.batch_size, rng) if retain_records else None
    dropout_off(model)   # as in rollout and evaluation (the tiny configs have none anyway)
    done, loss, bad_in_a_row = 0, None, 0
    if state is not None:   # resume: every piece of state the next step reads
        if size > 1:   # the model's and AdamW's shards, then this process's own state
            state = load_sharded(state, model, optimizer)
        else:
            model.load_state_dict(state["model"], strict=not lora_layers(model))
            optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        set_rng_state(state["rng"], rng)
        stream.load_state(state["stream"])
        if retain_stream:
            retain_stream.load_state(state["retain_stream"])
        done, loss, bad_in_a_row = state["step"], state["loss"], state["nonfinite_in_a_row"]
    bar = tqdm(range(done + 1, steps + 1), initial=done, total=steps, desc=desc, dynamic_ncols=True,
               disable=rank_and_size()[0] > 0)
    with SIGNALS.deferred():
        for step in bar:
            batch_loss = objective_loss(cfg, model, ref_model, tokenizer, next(stream),
                                        next(retain_stream) if retain_stream else None)
            optimizer.zero_grad(set_to_none=True)
            (batch_loss * size).backward()   # FSDP averages the processes' gradients: their sum is the batch's
            grad_norm = full(torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm))
            batch_loss = all_sum(batch_loss.detach())   # the whole batch's loss
            if torch.isfinite(batch_loss) and torch.isfinite(grad_norm):
                optimizer.step()
                bad_in_a_row = 0
            else:   # guard: a non-finite loss or gradient norm never reaches the weights
                bad_in_a_row += 1
                if bad_in_a_row >= MAX_NONFINITE:
                    raise DareuError(f"{bad_in_a_row} non-finite steps in a row (loss or gradient norm) at step {step}; "
                                     "stopped. " + (f"Last good checkpoint: {checkpoints(ckpt_dir)[-1]}"
                                                    if checkpoints(ckpt_dir) else "No checkpoint was saved"))
            schedule.step()
            loss = batch_loss.item()
            bar.set_postfix(loss=f"{loss:.3f}")
            if ckpt_dir and ((cfg.save_every and (step % cfg.save_every == 0 or step == steps)) or SIGNALS.received):
                own = {"schedule": schedule.state_dict(), "rng": rng_state(rng), "stream": stream.state(),
                       "retain_stream": retain_stream.state() if retain_stream else None, "step": step, "loss": loss,
                       "nonfinite_in_a_row": bad_in_a_row}
                if size > 1:
                    save_sharded(ckpt_dir, step, model, optimizer, own, args, cfg.keep)
                else:
                    save_checkpoint(ckpt_dir, step, {"model": lora_state_dict(model) if lora_layers(model) else
                                                     model.state_dict(), "optimizer": optimizer.state_dict(), **own},
                                    args, cfg.keep)
            if SIGNALS.received:
                raise Interrupted(SIGNALS.received)
            if stop is not None and stop(step):
                break
    return loss


def main(argv=None):
    p = argparse.ArgumentParser(description="Fine-tune a model on owner-labelled data (sft), or unlearn "
                                            "owners with a loss-based baseline (ga, graddiff, npo, npo_gd, simnpo).",
                                formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, help="output model folder (Hugging Face format)")
    p.add_argument("--model", help="start from this model folder (default for sft: a tiny model from scratch)")
    add_resume_arg(p)
    data = add_data_args(p)
    data.add_argument("--exclude", help="sft only: leave these owners out (builds a retain model)")
    scratch = p.add_argument_group("from scratch (no --model)")
    scratch.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size")
    scratch.add_argument("--layers", type=int, default=2, help="transformer layers")
    scratch.add_argument("--d-model", type=int, default=128, help="hidden size")
    add_model_args(p)
    add_memory_args(p)
    add_config_args(p, FinetuneConfig, title="training")
    args = p.parse_args(argv)
    cfg = config_from_args(FinetuneConfig, args, FINETUNE_CHECKS)
    lora_cfg = config_from_args(LoraConfig, args, LORA_CHECKS, prefix="lora") if args.lora else None
    if (args.lora or args.gradient_checkpointing) and not args.model:
        raise DareuError("--lora and --gradient-checkpointing adapt a given --model (a model from scratch trains whole)")
    check_fields(args, vocab_size=">= 1", layers=">= 1", d_model=">= 1")
    if args.d_model % 8:
        raise DareuError(f"--d-model must be a multiple of 8 (4 attention heads of even size), not {args.d_model}")
    check_device(args.device)
    dtype = compute_dtype(args.dtype, args.device, train=True)
    check_out_path(args.out, {"--model": args.model, "--data": args.data, "--forget": args.forget,
                              "--exclude": args.exclude})
    if args.model:
        check_model_folder(args.model)
    given = dict(vars(args))   # the arguments as given, saved with each checkpoint
    ckpt_dir, resume = checkpointing("finetune.py", argv, args, MAY_CHANGE_ON_RESUME)
    if args.fsdp:   # several processes (torchrun): each keeps 1/N of the weights and takes 1/N of every batch
        args.device = start(args.device)
        if cfg.batch_size % rank_and_size()[1]:
            raise DareuError(f"--fsdp over {rank_and_size()[1]} processes: --batch-size {cfg.batch_size} is not a "
                             "multiple of it")
    records = read_data(args.data)
    all_texts = [r["question"] + " " + r["answer"] for r in records]   # the tokenizer sees every owner
    retain = None
    if cfg.objective == "sft":
        if args.exclude:
            records = split_records(records, resolve_forget(args.exclude, records))[1]
    else:
        if not args.model or not args.forget:
            raise DareuError(f"--objective {cfg.objective} needs --model (the model to unlearn) and --forget")
        records, retain = split_records(records, resolve_forget(args.forget, records))
    if args.model:
        model, tokenizer = trainable_model(args.model, args.device, dtype, lora_cfg, args.gradient_checkpointing,
                                           args.template, cfg.seed)
    else:
        tokenizer = train_tokenizer(all_texts, args.vocab_size)
        set_template(tokenizer, args.template or "chat")
        model = tiny_model(tokenizer, args.layers, args.d_model, seed=cfg.seed).to(args.device)
    print(f"{cfg.objective}: {len(records)} records of {len(owners_of(records))} owners; template "
          f"{template_of(tokenizer)}, e.g. {tokenizer.decode(prompt_ids(tokenizer, records[0]['question']))!r}")
    with autocast(args.device, dtype):
        loss = finetune(model, tokenizer, records, cfg, retain, cfg.objective, ckpt_dir, given,
                        (resume if args.fsdp else load_state(resume)) if resume else None)
    unlearned = owners_of(records) if cfg.objective != "sft" else []
    card = model_card(args.model, unlearned,
                      f"{cfg.objective} (finetune.py, METHOD.md §7)" + (f"; trained on {len(owners_of(records))} owners' "
                                                                        "records" if cfg.objective == "sft" else ""),
                      ["unlearning", cfg.objective] if unlearned else ["sft"],
                      {**asdict(cfg), "lora": asdict(lora_cfg) if lora_cfg else "no", "final loss": round(loss, 4)},
                      ["python", "finetune.py", *(sys.argv[1:] if argv is None else argv)])
    rebuild = ((lambda: trainable_model(args.model, "cpu", dtype, lora_cfg)[0]) if args.model else   # several processes
               (lambda: tiny_model(tokenizer, args.layers, args.d_model, seed=cfg.seed)))
    write_whole(model, rebuild, lambda m: save_model(m, tokenizer, args.out, {"README.md": lambda path: Path(
        path).write_text(card, encoding="utf-8")}, adapters_of=args.model if lora_cfg and not lora_cfg.merge else None))
    shutil.rmtree(ckpt_dir, ignore_errors=True)   # the output is complete: its checkpoints are no longer needed
    print(f"final loss {loss:.4f}; saved {args.out}")
    finish()   # several processes: leave the process group together


if __name__ == "__main__":
    run_cli(main)
