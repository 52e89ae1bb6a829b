"""ppo.py: GAE against a loop, whitening, the first-minibatch invariant, retain distillation."""
import copy
import random

import torch

from finetune import Batches
from ppo import PPOConfig, gae, ppo_update, retain_distillation, whiten
from reward import token_rewards
from rollout import PolicyWithValue, RolloutConfig, forward_logprobs, generate


def gae_loop(rewards, values, lengths, gamma, lam):
    """Reference GAE, one sequence and one step at a time, straight from the definition."""
    adv = [[0.0] * len(r) for r in rewards]
    for i, n in enumerate(lengths):
        last = 0.0
        for t in reversed(range(n)):
            next_value = values[i][t + 1] if t + 1 < n else 0.0
            delta = rewards[i][t] + gamma * next_value - values[i][t]
            last = delta + gamma * lam * last
            adv[i][t] = last
    return adv


def test_gae_vectorised_equals_loop():
    g = torch.Generator().manual_seed(0)
    B, R = 6, 9
    lengths = [9, 1, 4, 7, 9, 2]
    mask = torch.tensor([[1.0] * n + [0.0] * (R - n) for n in lengths])
    rewards = torch.randn(B, R, generator=g) * mask            # zero on padding, as token_rewards gives
    values = torch.randn(B, R, generator=g)                    # garbage on padding must not leak in
    for gamma, lam in [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)]:
        adv, ret = gae(rewards, values, mask, gamma, lam)
        ref = torch.tensor(gae_loop(rewards.tolist(), values.tolist(), lengths, gamma, lam))
        assert torch.allclose(adv, ref, atol=1e-5)
        assert torch.allclose(ret, (ref + values) * mask, atol=1e-5)
        assert (adv[mask == 0] == 0).all()


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.1, -0.2, 0.5, 0.0]])
    values = torch.tensor([[0.3, 0.1, -0.4, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, _ = gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(adv[0, :3], torch.tensor([0.4, 0.3, 0.5]) - values[0, :3])


def test_whiten_masked():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    w = whiten(x, mask)
    real = w[mask == 1]
    assert abs(real.mean().item()) < 1e-6
    assert abs(real.pow(2).mean().item() - 1) < 1e-4
    assert (w[mask == 0] == 0).all()


def make_rollout(model, tok, records, temperature=1.0):
    policy = PolicyWithValue(model).eval()
    roll = generate(model, tok, [r["question"] for r in records], RolloutConfig(temperature=temperature, max_new_tokens=6))
    mask = roll["response_mask"].float()
    with torch.no_grad():
        old = forward_logprobs(policy, roll["input_ids"], roll["attention_mask"], roll["n_response"], temperature)
    rewards, _ = token_rewards(-torch.rand(len(records)), old["logprobs"], old["logprobs"], mask, 0.05)
    adv, ret = gae(rewards, old["values"], mask, 1.0, 0.95)
    batch = dict(roll, logprobs=old["logprobs"], values=old["values"], advantages=whiten(adv, mask), returns=ret,
                 response_mask=mask)
    return policy, batch


def test_first_minibatch_ratio_is_one_and_nothing_clipped(tiny, world_records):
    model, tok = tiny
    model = copy.deepcopy(model)
    torch.manual_seed(0)
    temperature = 0.7
    policy, batch = make_rollout(model, tok, world_records[:12], temperature)
    ref = copy.deepcopy(model).requires_grad_(False)
    cfg = PPOConfig(lr=1e-2, epochs=2, minibatch_size=4)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    stream = Batches(world_records, 4, random.Random(0))
    stats = ppo_update(policy, ref, optimizer, tok, batch, cfg, temperature, stream, torch.Generator().manual_seed(0))
    first = stats[0]
    assert abs(first["ratio"] - 1) < 1e-5
    assert abs(first["approx_kl"]) < 1e-6
    assert first["clipfrac"] == 0
    assert first["retain_kl"] < 1e-6       # policy == reference before the first step
    # ... and the policy did move afterwards (a big lr makes later minibatches off-policy)
    assert max(abs(s["ratio"] - 1) for s in stats[1:]) > 1e-3


def test_retain_distillation_zero_for_identical_models_and_positive_after_change(tiny, world_records):
    model, tok = tiny
    ref = copy.deepcopy(model)
    assert retain_distillation(model, ref, tok, world_records[:4]).item() < 1e-6
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.add_(0.05 * torch.randn_like(other.lm_head.weight))
    assert retain_distillation(other, ref, tok, world_records[:4]).item() > 1e-4
