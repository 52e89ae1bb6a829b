"""PPO: advantages, the clipped update, and retain-set distillation (METHOD.md §4–5).

Given a rollout (responses sampled from π_old = π_θ, their logprobs, values and per-token rewards):
  5. advantages, one function of ADVANTAGES (--advantage):
     gae    GAE (Schulman et al., 2016) with γ = 1, λ = 0.95 on response tokens, bootstrap 0 after
            the last token, then whitened over the real tokens of the batch:
                δ_t = r_t + γ V_{t+1} − V_t,   A_t = δ_t + γλ A_{t+1},   returns R_t = A_t + V_t
     group  GRPO-style (Shao et al., 2024), no value head: each sample's return G_i = Σ_t r_t is
            normalised among the samples of the same prompt, A_i = (G_i − mean_g G) / (std_g G + 1e-8),
            and every token of sample i gets A_i; there is no value loss.
     group_mean  Dr. GRPO (Liu et al., 2025): A_i = G_i − mean_g G (no std division).
     rloo   RLOO (Ahmadian et al., 2024): A_i = G_i − mean_{j≠i} G_j, the other samples' mean as baseline.
  6. K epochs of shuffled minibatches (Schulman et al., 2017), each step minimising
        L = L_clip + c_v · L_V + λ_retain · L_retain
        L_clip   = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1 ± ε)),         ρ_t = π_θ(y_t|·) / π_old(y_t|·)
        L_V      = ½ mean_t max((V_t − R_t)², (clip(V_t, V_old ± ε_v) − R_t)²)
        L_retain = mean over retain answer tokens of KL(π_ref(·|x, y<t) ‖ π_θ(·|x, y<t))
     with gradient-norm clipping (L_V = 0 with group advantages). Means are over real response tokens (never padding).
Invariant (tested): on the first minibatch of the first epoch ρ = 1, approx-KL = 0, clipfrac = 0.

    python ppo.py --help     (the PPO knobs; unlearn.py runs the loop)
"""
import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from helpers.distributed import all_sum, full, rank_and_size, share
from helpers.models import chunked, clock, forward_logprobs, position_ids_from_mask
from helpers.prompts import encode_qa


@dataclass
class PPOConfig:
    advantage: str = "gae"         # a key of ADVANTAGES: "gae" (value head, GAE, whitened), "group" (GRPO), "group_mean" (Dr. GRPO) or "rloo"
    lr: float | None = None        # AdamW learning rate of policy and value head; None: by training mode and model size (unlearn.default_lr)
    epochs: int = 4                # K: passes over each rollout
    minibatch_size: int = 16       # responses per gradient step
    clip: float = 0.2              # ε of the clipped policy objective
    vf_coef: float = 0.1           # c_v, weight of the value loss
    vf_clip: float = 0.2           # ε_v, value clipping around the rollout's values
    gamma: float = 1.0             # γ of GAE (gae only)
    lam: float = 0.95              # λ of GAE (gae only)
    max_grad_norm: float = 1.0     # gradient-norm clip
    retain_coef: float = 1.0       # λ_retain, weight of the retain distillation
    retain_batch_size: int = 16    # retain QA pairs per gradient step


def masked_mean(x, mask, count=None):
    """Mean of x over the masked entries; with `count`, the sum over them divided by count instead (the
    tokens of a whole minibatch when this process holds part of it)."""
    return (x * mask).sum() / (mask.sum().clamp(min=1) if count is None else count)


def whiten(x, mask):
    """(x − mean) / std over the masked entries; padding stays 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def gae(rewards, values, mask, gamma, lam):
    """Generalised advantage estimation over [B, R] response tokens (right-padded, mask 1 on real
    tokens). V after the last real token is 0. Returns (advantages, returns), zero on padding."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(next_advantage)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
    return advantages, (advantages + values) * mask


def gae_advantages(rewards, values, mask, prompt_index, cfg):
    """GAE, whitened over the batch's real tokens. Returns (advantages, returns) [B, R]."""
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    return whiten(advantages, mask), returns


def centred_returns(rewards, mask, prompt_index):
    """Per sample i: (G_i − mean_g G, std_g G, k_g), G_i = Σ_t r_t, g the k_g samples that answer the same
    prompt (prompt_index), std with Bessel's correction. [B] each."""
    returns = (rewards * mask).sum(-1)
    index = prompt_index.to(returns.device)
    count = torch.zeros(int(index.max()) + 1, device=returns.device).index_add_(0, index, torch.ones_like(returns))
    mean = torch.zeros_like(count).index_add_(0, index, returns) / count
    var = torch.zeros_like(count).index_add_(0, index, (returns - mean[index]) ** 2) / (count - 1).clamp(min=1)
    return returns - mean[index], var[index].sqrt(), count[index]


def group_advantages(rewards, values, mask, prompt_index, cfg):
    """GRPO-style: A_i = (G_i − mean_g G) / (std_g G + 1e-8) on every token of sample i. With two samples
    a group's A is ±1/√2 whatever the gap between them (unlearn.py asks for three or more).
    Returns (advantages [B, R], None): no value targets, so no value loss."""
    centred, std, _ = centred_returns(rewards, mask, prompt_index)
    return (centred / (std + 1e-8))[:, None] * mask, None


def group_mean_advantages(rewards, values, mask, prompt_index, cfg):
    """Dr. GRPO (Liu et al., 2025): A_i = G_i − mean_g G, without the std division, so the size of the
    reward gap reaches the update. Returns (advantages [B, R], None)."""
    centred, _, _ = centred_returns(rewards, mask, prompt_index)
    return centred[:, None] * mask, None


def rloo_advantages(rewards, values, mask, prompt_index, cfg):
    """RLOO (Ahmadian et al., 2024): the baseline of sample i is the mean return of the other samples of
    its prompt, A_i = G_i − mean_{j∈g, j≠i} G_j = k/(k−1) · (G_i − mean_g G). Returns (advantages, None)."""
    centred, _, k = centred_returns(rewards, mask, prompt_index)
    return (centred * k / (k - 1).clamp(min=1))[:, None] * mask, None


# advantage estimators: name -> f(rewards [B,R], values [B,R], mask [B,R], prompt_index [B], cfg)
#                                  -> (advantages [B,R], returns [B,R] or None when there is no value loss)
ADVANTAGES = {"gae": gae_advantages, "group": group_advantages, "group_mean": group_mean_advantages,
              "rloo": rloo_advantages}
# the samples per prompt a grouped estimator needs (with two, group's A is the sign of the gap alone)
MIN_SAMPLES = {"group": 3, "group_mean": 2, "rloo": 2}


def _kl(ref_logits, logits):
    """KL(softmax(ref) ‖ softmax(logits)) per position, in float32."""
    ref_logp, logp = F.log_softmax(ref_logits.float(), -1), F.log_softmax(logits.float(), -1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)


def retain_distillation(policy_lm, ref_lm, tokenizer, records):
    """Mean over retain answer tokens of KL(π_ref ‖ π_θ), teacher-forced on the gold answers. Logits
    are computed for the answer columns only (answers are right-aligned: the last n + 1 columns,
    n the longest answer), and the float32 KL in chunks of positions (models.chunked). Under several
    processes each takes its share of the rows, and the sum is divided by all of their answer tokens."""
    ids, mask, answer_mask = encode_qa(tokenizer, [r["question"] for r in records], [r["answer"] for r in records])
    count = answer_mask[:, 1:].sum()                           # every row's answer tokens, whoever scores them
    ids, mask, answer_mask = (share(t).to(policy_lm.device) for t in (ids, mask, answer_mask))
    keep = int(answer_mask.sum(-1).max()) + 1                 # column P-1 predicts the first answer token
    where = answer_mask[:, -keep + 1:].bool()                 # the kept column t predicts token t+1
    forward = dict(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), logits_to_keep=keep)
    with torch.no_grad():
        ref_logits = ref_lm(**forward).logits[:, :-1][where]  # [answer tokens, V]
    logits = policy_lm(**forward).logits[:, :-1][where]
    return chunked(_kl, ref_logits, logits).sum() / count


def ppo_losses(logprobs, values, old_logprobs, old_values, advantages, returns, mask, cfg, count=None):
    """The clipped policy loss L_clip and value loss L_V of one minibatch ([B, R] tensors, `mask` 1 on
    real response tokens; `returns` None: L_V = 0; means over `count` tokens when given, see masked_mean),
    and the minibatch's statistics (floats):
        ρ_t       = exp(log π_θ(y_t|·) − log π_old(y_t|·))
        approx_kl = mean_t (ρ_t − 1) − log ρ_t      k3 estimator of KL(π_old ‖ π_θ) on samples of π_old
        clipfrac  = share of tokens with |ρ_t − 1| > ε,   ratio = mean_t ρ_t"""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = log_ratio.exp()
    pg_loss = masked_mean(torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)), mask, count)
    vf_loss = torch.zeros((), device=pg_loss.device)
    if returns is not None:   # none with group advantages: no value head to fit
        v_clipped = old_values + (values - old_values).clamp(-cfg.vf_clip, cfg.vf_clip)
        vf_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (v_clipped - returns) ** 2), mask, count)
    with torch.no_grad():
        stats = {"approx_kl": masked_mean((ratio - 1) - log_ratio, mask, count).item(),
                 "clipfrac": masked_mean(((ratio - 1).abs() > cfg.clip).float(), mask, count).item(),
                 "ratio": masked_mean(ratio, mask, count).item()}
    return pg_loss, vf_loss, stats


def ppo_update(policy, ref_lm, optimizer, tokenizer, batch, cfg, temperature, retain_stream=None, generator=None):
    """K epochs of clipped PPO minibatch steps on one rollout `batch` (dict with input_ids,
    attention_mask, response_mask, n_response, logprobs, values, advantages, returns).
    A step whose loss or gradient norm is not finite is skipped (stats {"nonfinite": True}).
    Returns a list of per-minibatch stats dicts (the first one is the ratio == 1 check); each holds
    retain_seconds, the time of its retain distillation forward (its backward is part of the step's).
    Under several processes (helpers/distributed.py) each holds the whole batch and draws the same order,
    and computes its share of each minibatch's rows; means divide by the whole minibatch's tokens, and the
    loss is scaled by the number of processes, whose gradients FSDP averages: one process's step, exactly."""
    n, R = batch["input_ids"].shape[0], batch["n_response"]
    rank, size = rank_and_size()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    stats = []
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.minibatch_size):
            rows = order[start:start + cfg.minibatch_size].to(batch["input_ids"].device)
            count = batch["response_mask"][rows].float().sum().clamp(min=1)   # the whole minibatch's tokens
            idx = rows[rank::size]
            mask = batch["response_mask"][idx].float()
            out = forward_logprobs(policy, batch["input_ids"][idx], batch["attention_mask"][idx], R, temperature,
                                   with_entropy=True)
            old_logp, adv, ret, old_v = (None if batch[k] is None else batch[k][idx]
                                         for k in ("logprobs", "advantages", "returns", "values"))
            pg_loss, vf_loss, minibatch_stats = ppo_losses(out["logprobs"], out["values"], old_logp, old_v, adv, ret,
                                                           mask, cfg, count)
            loss = pg_loss + cfg.vf_coef * vf_loss
            retain_kl, start = torch.zeros(()), clock(policy.lm.device)
            if retain_stream is not None and cfg.retain_coef > 0:
                retain_kl = retain_distillation(policy.lm, ref_lm, tokenizer, next(retain_stream))
                loss = loss + cfg.retain_coef * retain_kl
            retain_seconds = clock(policy.lm.device) - start

            optimizer.zero_grad(set_to_none=True)
            if not all_sum(torch.isfinite(loss).float()) == size:   # guard: skip the step, the caller counts it
                stats.append({"nonfinite": True, "retain_seconds": retain_seconds})
                continue
            (loss * size).backward()
            grad_norm = full(torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm))
            if not torch.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                stats.append({"nonfinite": True, "retain_seconds": retain_seconds})
                continue
            optimizer.step()
            # the minibatch's statistics: this process's shares of its means, summed over the processes
            minibatch_stats = {"pg_loss": pg_loss.item(), "vf_loss": vf_loss.item(), "retain_kl": retain_kl.item(),
                               **minibatch_stats, "entropy": masked_mean(out["entropy"], mask, count).item()}
            stats.append({"nonfinite": False, "retain_seconds": retain_seconds,
                          **{k: all_sum(v) for k, v in minibatch_stats.items()}, "grad_norm": grad_norm.item()})
    return stats


# ----------------------------------------------------------------------------------------------
# The command line: what each flag accepts, checked where the flags are parsed (helpers/cli.py)

PPO_CHECKS = dict(advantage=ADVANTAGES, lr="> 0", epochs=">= 1", minibatch_size=">= 1", clip="> 0", vf_coef=">= 0",
                  vf_clip="> 0", gamma="in [0, 1]", lam="in [0, 1]", max_grad_norm="> 0", retain_coef=">= 0",
                  retain_batch_size=">= 1")


def main():
    from helpers.cli import HelpFormatter, add_config_args, config_from_args
    p = argparse.ArgumentParser(description="DareU's PPO update. The knobs below are passed to unlearn.py; "
                                            "this file holds the algorithm.", formatter_class=HelpFormatter)
    add_config_args(p, PPOConfig, title="PPO")
    print(config_from_args(PPOConfig, p.parse_args(), PPO_CHECKS))


if __name__ == "__main__":
    from helpers.cli import run_cli
    run_cli(main)
