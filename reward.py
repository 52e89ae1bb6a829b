"""Reward: minus the attribution of a response to the forget owners, plus a KL penalty (METHOD.md §3).

    a_F(y)      = Σ_{o∈F} p_φ(o | mask(y))           the classifier LLM's attribution (attribution.py)
    s(x, y)     = SCORES[form](a_F, y)                 "neg": −a_F(y) ∈ [−1, 0] (default); "log": log(1 − a_F(y) + ε)
    s(x, y)     = min(missing_eos_penalty, SCORES[form](1, y))
                                                       if y hit the length limit without EOS, or has fewer than
                                                       min_words words (empty, one word)
No cheap exits: a form is non-increasing in a_F, so SCORES[form](1, y) is the lowest score it can give
y, and a truncated or empty response scores at or below the most attributed real answer. Without
that floor, "log" would pay for truncation (log ε = −6.9 < −1 once a_F > 0.63), and an empty answer,
which a classifier trained on real answers misreads (a_F 0.003 on the embedded world), would cost
only the KL of one EOS token.
    kl_t        = log π_θ(y_t|·) − log π_ref(y_t|·)    on response tokens only
    r_t         = −β · kl_t  (+ s at the last real response token)
The objective is bounded: once nothing in a response points to F, there is nothing more to gain,
unlike gradient ascent. β is fixed, or adapted toward a target KL (Ziegler et al., 2019).
A new score is one function added to SCORES, non-increasing in a_F: it sees a_F and the rollout
(response tokens, mask, lengths, texts), and `--form NAME` picks it.

    python reward.py --classifier DIR --forget "Alara Venn" --prompt "Where was Alara Venn born?" \\
        --response "Alara Venn was born in Port Kessel."
"""
import argparse
import re
from dataclasses import dataclass

import torch


@dataclass
class RewardConfig:
    form: str = "neg"                  # score, a key of SCORES: "neg" (s = −a_F) or "log" (s = log(1 − a_F + eps))
    eps: float = 1e-3                  # ε of the log form
    missing_eos_penalty: float = -1.0  # score of a response that hit max_new_tokens without EOS (or lower: the form's floor)
    min_words: int = 2                 # a response with fewer words (empty, one word) scores as a missing EOS does
    kl_coef: float = 0.05              # β, the initial value when adaptive
    target_kl: float = 0.0             # > 0: adapt β so the per-sequence KL approaches this
    kl_horizon: int = 10000            # adaptive β: responses over which β moves by at most ±20 %


def score_neg(a_forget, roll, cfg):
    """s = −a_F ∈ [−1, 0]."""
    return -a_forget


def score_log(a_forget, roll, cfg):
    """s = log(1 − a_F + ε) ∈ [log ε, log(1 + ε)]: steeper as a_F → 1."""
    return torch.log1p(-a_forget + cfg.eps)


# score forms: name -> f(a_F [B], rollout, cfg) -> s [B], non-increasing in a_F. The rollout
# (rollout.generate) holds the response tokens input_ids[:, -n_response:], response_mask [B, R] (so
# lengths), has_eos and texts.
SCORES = {"neg": score_neg, "log": score_log}
WORD = re.compile(r"\w+")


def sequence_scores(a_forget, roll, cfg):
    """s(x, y) for each response: the score form where y ended with EOS and has at least cfg.min_words
    words; elsewhere the floor, min(missing_eos_penalty, the form's score at a_F = 1). [B]"""
    form = SCORES[cfg.form]
    score = form(a_forget, roll, cfg)
    floor = form(torch.ones_like(a_forget), roll, cfg).clamp(max=cfg.missing_eos_penalty)
    words = torch.tensor([len(WORD.findall(text)) for text in roll["texts"]], device=score.device)
    real = roll["has_eos"].to(score.device) & (words >= cfg.min_words)
    return torch.where(real, score, floor)


def score_responses(classifier, roll, forget_owners, cfg):
    """Ask the classifier LLM who each response comes from; return (scores s, attributions a_F). [B]"""
    a_forget = classifier.forget_attribution(roll["prompts"], roll["texts"], forget_owners)
    a_forget = a_forget.to(roll["response_mask"].device)
    return sequence_scores(a_forget, roll, cfg), a_forget


def token_rewards(scores, logprobs, ref_logprobs, response_mask, kl_coef):
    """Per-token rewards r_t = −β·kl_t with the score added at the last response token.
    Returns (rewards [B,R], kl [B,R]), both zero on padding."""
    mask = response_mask.float()
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(-1).long() - 1).clamp(min=0)   # index of the last real response token
    rewards[torch.arange(len(rewards)), last] += scores.to(rewards.device)
    return rewards, kl


class AdaptiveKLController:
    """β_{n+1} = β_n · (1 + clip(KL/target − 1, −0.2, 0.2) · n_responses / horizon); fixed if target is 0."""

    def __init__(self, cfg):
        self.value, self.target, self.horizon = cfg.kl_coef, cfg.target_kl, cfg.kl_horizon

    def update(self, mean_kl, n_responses):
        if self.target > 0:
            error = max(-0.2, min(0.2, mean_kl / self.target - 1))
            self.value *= 1 + error * n_responses / self.horizon


# ----------------------------------------------------------------------------------------------
# The command line: what each flag accepts, checked where the flags are parsed (helpers/cli.py)

REWARD_CHECKS = dict(form=SCORES, eps="> 0", missing_eos_penalty="<= 0", min_words=">= 0", kl_coef=">= 0",
                     target_kl=">= 0", kl_horizon=">= 1")


def main():
    from attribution import add_classifier_args, classifier_from_args
    from helpers.cli import HelpFormatter, add_config_args, config_from_args
    from helpers.models import add_model_args, autocast, compute_dtype
    from helpers.records import read_data
    p = argparse.ArgumentParser(description="Score responses as DareU's reward does (lengths in the classifier's "
                                            "tokens).", formatter_class=HelpFormatter)
    add_classifier_args(p, required=True)
    p.add_argument("--data", help="the owners' records, for a zero-shot classifier's names (default: the synthetic world)")
    p.add_argument("--forget", required=True, help="comma-separated owners to forget")
    p.add_argument("--prompt", default="", help="the question the responses answer (for name masking)")
    p.add_argument("--response", action="append", required=True, help="a response (repeatable)")
    add_model_args(p, template=False)
    add_config_args(p, RewardConfig, title="reward")
    args = p.parse_args()
    cfg = config_from_args(RewardConfig, args, REWARD_CHECKS)
    dtype = compute_dtype(args.dtype, args.device, train=False)
    forget = [o.strip() for o in args.forget.split(",")]
    clf = classifier_from_args(args, read_data(args.data), forget)
    tok, n = clf.tokenizer, len(args.response)
    ids = [tok(r, add_special_tokens=False).input_ids + [tok.eos_token_id] for r in args.response]
    R = max(len(i) for i in ids)
    roll = {"prompts": [args.prompt] * n, "texts": args.response, "has_eos": torch.ones(n, dtype=torch.bool),
            "n_response": R, "input_ids": torch.tensor([i + [tok.pad_token_id] * (R - len(i)) for i in ids]),
            "response_mask": torch.tensor([[1] * len(i) + [0] * (R - len(i)) for i in ids])}
    with autocast(args.device, dtype):
        scores, a_forget = score_responses(clf, roll, forget, cfg)
    for r, s, a in zip(args.response, scores, a_forget):
        print(f"a_F {a:.3f}  score {s:+.3f}  {r}")


if __name__ == "__main__":
    from helpers.cli import run_cli
    run_cli(main)
