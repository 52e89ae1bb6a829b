"""reward.py: sign and range of the score, the missing-EOS penalty, per-token KL rewards."""
import math

import pytest
import torch

import reward
from reward import AdaptiveKLController, RewardConfig, sequence_scores, token_rewards


def rollout_of(has_eos, lengths=None, texts=None):
    """The parts of a rollout a score form sees: has_eos, the response mask (lengths) and the texts."""
    lengths = lengths or [1] * len(has_eos)
    R = max(lengths)
    return {"has_eos": torch.tensor(has_eos), "response_mask": torch.tensor([[1] * n + [0] * (R - n) for n in lengths]),
            "texts": texts or ["He was born in Port Kessel."] * len(has_eos)}


def test_score_is_minus_attribution_in_range():
    a = torch.tensor([0.0, 0.25, 0.9, 1.0])
    s = sequence_scores(a, rollout_of([True] * 4), RewardConfig())
    assert torch.allclose(s, -a)
    assert (s <= 0).all() and (s >= -1).all()
    # less attribution to F is always better
    assert (s[:-1] > s[1:]).all()


def test_log_form_is_monotone_and_bounded():
    a = torch.tensor([0.0, 0.5, 1.0])
    s = sequence_scores(a, rollout_of([True] * 3), RewardConfig(form="log", eps=1e-3))
    assert torch.allclose(s, torch.log(1 - a + 1e-3), atol=1e-6)
    assert s[0] > s[1] > s[2] and s[0] <= torch.log(torch.tensor(1.001))


def test_missing_eos_gets_the_penalty():
    s = sequence_scores(torch.tensor([0.1, 0.1]), rollout_of([True, False]), RewardConfig(missing_eos_penalty=-1.0))
    assert s.tolist() == [-0.10000000149011612, -1.0]


@pytest.mark.parametrize("form", sorted(reward.SCORES))
def test_no_cheap_exits_for_any_form(form):
    """For every form: a truncated response, an empty one and a one-word one score at or below the lowest
    score a real answer can get (a_F = 1), whatever their own a_F, and below a real answer's score at any
    a_F < 1; "I don't know." (3 words) is scored as the real answer it is."""
    cfg = RewardConfig(form=form)
    a_grid = torch.linspace(0, 1, 101)
    real_scores = sequence_scores(a_grid, rollout_of([True] * 101), cfg)
    texts = ["He was born in Port Kessel.", "", "Kessel.", "I don't know."]   # truncated, empty, one word, refusal
    s = sequence_scores(torch.zeros(4), rollout_of([False, True, True, True], texts=texts), cfg)
    assert (s[:3] <= real_scores.min()).all() and (s[:3] < real_scores[:-1].min()).all()
    assert s[3] == real_scores[0]
    if form == "log":   # its floor, log ε, is below the fixed penalty of −1
        assert s[0].item() == pytest.approx(math.log(cfg.eps), abs=1e-4)


def test_token_rewards_kl_and_score_placement():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-1.0, -0.5, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = token_rewards(torch.tensor([-0.7, -0.2]), logp, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, -2.0], [0.5, 0.0, 0.0]]))
    expected = torch.tensor([[-0.05, 0.0, 0.2 - 0.7], [-0.05, -0.2, 0.0]])   # score at the last real token
    assert torch.allclose(rewards, expected)


def test_kl_is_zero_when_policy_is_reference():
    logp = torch.randn(3, 5)
    rewards, kl = token_rewards(torch.zeros(3), logp, logp.clone(), torch.ones(3, 5), kl_coef=0.05)
    assert torch.equal(kl, torch.zeros_like(kl)) and torch.equal(rewards, torch.zeros_like(rewards))


def test_adaptive_kl_moves_toward_target():
    ctl = AdaptiveKLController(RewardConfig(kl_coef=0.1, target_kl=1.0, kl_horizon=100))
    ctl.update(mean_kl=5.0, n_responses=10)       # KL too high: β grows by 20 % · 10/100
    assert abs(ctl.value - 0.1 * 1.02) < 1e-12
    fixed = AdaptiveKLController(RewardConfig(kl_coef=0.1))
    fixed.update(5.0, 10)
    assert fixed.value == 0.1


def test_a_new_score_form_is_one_entry_of_scores(monkeypatch):
    """The seam for reward hacks: a function added to SCORES is a valid --form, sees the response
    lengths, and the missing-EOS rule still applies to it, with its own floor."""
    from helpers.cli import check_fields
    with pytest.raises(Exception, match="choose from"):
        check_fields(RewardConfig(form="length"), **reward.REWARD_CHECKS)   # as the flags are parsed
    monkeypatch.setitem(reward.SCORES, "length", lambda a, roll, cfg: -a - 0.1 * roll["response_mask"].sum(-1))
    check_fields(RewardConfig(form="length"), **reward.REWARD_CHECKS)       # now a valid --form
    s = sequence_scores(torch.tensor([0.5, 0.5, 0.5]), rollout_of([True, True, False], [1, 3, 2]),
                        RewardConfig(form="length"))
    assert torch.allclose(s, torch.tensor([-0.6, -0.8, -1.2]))   # the floor: this form at a_F = 1, length 2
