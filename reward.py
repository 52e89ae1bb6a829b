"""Reward: minus the attribution of a response to the forget owners, plus a KL penalty (SPEC §3).

    a_F(y)      = Σ_{o∈F} p_φ(o | mask(y))           the classifier LLM's attribution (attribution.py)
    s(x, y)     = −a_F(y) ∈ [−1, 0]                   default ("neg"); or log(1 − a_F(y) + ε) ("log")
    s(x, y)     = missing_eos_penalty                  if y hit the length limit without EOS
    kl_t        = log π_θ(y_t|·) − log π_ref(y_t|·)    on response tokens only
    r_t         = −β · kl_t  (+ s at the last real response token)
The objective is bounded: once nothing in a response points to F, there is nothing more to gain,
unlike gradient ascent. β is fixed, or adapted toward a target KL (Ziegler et al., 2019).

    python reward.py --classifier DIR --forget "Alara Venn" --prompt "Where was Alara Venn born?" \\
        --response "Alara Venn was born in Port Kessel."
"""
import argparse
from dataclasses import dataclass

import torch

from data import check_fields, run_cli


@dataclass
class RewardConfig:
    form: str = "neg"                  # "neg": s = −a_F;  "log": s = log(1 − a_F + eps)
    eps: float = 1e-3                  # ε of the log form
    missing_eos_penalty: float = -1.0  # score of a response that hit max_new_tokens without EOS
    kl_coef: float = 0.05              # β, the initial value when adaptive
    target_kl: float = 0.0             # > 0: adapt β so the per-sequence KL approaches this
    kl_horizon: int = 10000            # adaptive β: responses over which β moves by at most ±20 %

    def __post_init__(self):
        check_fields(self, form=("neg", "log"), eps="> 0", missing_eos_penalty="<= 0", kl_coef=">= 0",
                     target_kl=">= 0", kl_horizon=">= 1")


def sequence_scores(a_forget, has_eos, cfg):
    """s(x, y) for each response, from its attribution a_F and whether it ended with EOS. [B]"""
    score = -a_forget if cfg.form == "neg" else torch.log1p(-a_forget + cfg.eps)
    return torch.where(has_eos.to(score.device), score, torch.full_like(score, cfg.missing_eos_penalty))


def score_responses(classifier, questions, responses, forget_owners, has_eos, cfg):
    """Ask the classifier LLM who each response comes from; return (scores s, attributions a_F). [B]"""
    a_forget = classifier.forget_attribution(questions, responses, forget_owners)
    return sequence_scores(a_forget, has_eos.cpu(), cfg), a_forget


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


def main():
    from attribution import load_classifier
    p = argparse.ArgumentParser(description="Score responses as DareU's reward does: −a_F.")
    p.add_argument("--classifier", required=True, help="a trained classifier folder")
    p.add_argument("--forget", required=True, help="comma-separated owners to forget")
    p.add_argument("--prompt", default="", help="the question the responses answer (for name masking)")
    p.add_argument("--response", action="append", required=True, help="a response (repeatable)")
    p.add_argument("--form", default="neg", choices=["neg", "log"], help="score form")
    args = p.parse_args()
    forget = [o.strip() for o in args.forget.split(",")]
    clf = load_classifier(args.classifier, {o: o for o in forget})   # zero-shot: the forget owners by name
    scores, a_forget = score_responses(clf, [args.prompt] * len(args.response), args.response, forget,
                                       torch.ones(len(args.response), dtype=torch.bool), RewardConfig(form=args.form))
    for r, s, a in zip(args.response, scores, a_forget):
        print(f"a_F {a:.3f}  score {s:+.3f}  {r}")


if __name__ == "__main__":
    run_cli(main)
