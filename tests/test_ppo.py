"""ppo.py: GAE against a loop, whitening, the clipped losses on a batch worked out by hand, the
first-minibatch invariant, the update's direction, and every KL against its definition."""
import copy
import math
import random

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from helpers.lora import LoraConfig
from helpers.models import dropout_off, forward_logprobs, frozen_reference, trainable_model
from helpers.prompts import encode_qa
from helpers.records import Batches
from ppo import ADVANTAGES, PPOConfig, gae, group_advantages, ppo_losses, ppo_update, retain_distillation, whiten
from reward import token_rewards
from rollout import PolicyWithValue, RolloutConfig, generate


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


def test_group_advantages_by_hand():
    """Two prompts, samples 0, 2, 3 answer prompt 0 and sample 1 answers prompt 1 twice over (1, 4):
    returns G = Σ_t r_t; A = (G − group mean) / (group std, Bessel) on every real token."""
    rewards = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 9.0], [2.0, 1.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    prompt_index = torch.tensor([0, 1, 0, 0, 1])
    adv, returns = group_advantages(rewards, None, mask, prompt_index, PPOConfig(advantage="group"))
    # group 0: G = 1, −1 (the 9 is padding), 3: mean 1, std √((0 + 4 + 4) / 2) = 2 -> A = 0, −1, 1
    # group 1: G = 1, 3: mean 2, std √((1 + 1) / 1) = √2 -> A = −1/√2, 1/√2
    r2 = 2 ** -0.5
    expected = torch.tensor([[0.0, 0.0, 0.0], [-r2, 0.0, 0.0], [-1.0, -1.0, 0.0], [1.0, 1.0, 1.0], [r2, 0.0, 0.0]])
    assert returns is None and torch.allclose(adv, expected, atol=1e-6)


def test_group_mean_and_rloo_advantages_by_hand():
    """The same batch: group 0 returns 1, −1, 3 (mean 1), group 1 returns 1, 3 (mean 2).
    group_mean (Dr. GRPO): A = G − mean = 0, −2, 2 and −1, 1. RLOO: A = G − mean of the others =
    1 − 1 = 0, −1 − 2 = −3, 3 − 0 = 3 and 1 − 3 = −2, 3 − 1 = 2 (= k/(k−1) · (G − mean)). Neither divides by
    the spread, so a pair with a small reward gap gets a small update (GRPO's group gives ±1/√2 to any pair)."""
    rewards = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 9.0], [2.0, 1.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    prompt_index = torch.tensor([0, 1, 0, 0, 1])
    for name, per_sample in (("group_mean", [0.0, -1.0, -2.0, 2.0, 1.0]), ("rloo", [0.0, -2.0, -3.0, 3.0, 2.0])):
        adv, returns = ADVANTAGES[name](rewards, None, mask, prompt_index, PPOConfig(advantage=name))
        assert returns is None and torch.allclose(adv, torch.tensor(per_sample)[:, None] * mask, atol=1e-6), name
    tiny_gap = torch.tensor([[-0.50], [-0.51]])
    pair = torch.tensor([0, 0])
    assert torch.allclose(ADVANTAGES["group"](tiny_gap, None, torch.ones(2, 1), pair, PPOConfig())[0].abs(),
                          torch.full((2, 1), 2 ** -0.5), atol=1e-4)
    assert torch.allclose(ADVANTAGES["rloo"](tiny_gap, None, torch.ones(2, 1), pair, PPOConfig())[0].abs(),
                          torch.full((2, 1), 0.01), atol=1e-6)


def test_group_advantages_vectorised_equal_a_loop_over_groups():
    g = torch.Generator().manual_seed(1)
    B, R = 12, 5
    mask = (torch.arange(R)[None] < torch.randint(1, R + 1, (B,), generator=g)[:, None]).float()
    rewards = torch.randn(B, R, generator=g)
    prompt_index = torch.arange(4).repeat(3)
    adv, _ = ADVANTAGES["group"](rewards, None, mask, prompt_index, PPOConfig())
    for i in range(B):
        group = torch.tensor([(rewards[j] * mask[j]).sum() for j in range(B) if prompt_index[j] == prompt_index[i]])
        a = ((rewards[i] * mask[i]).sum() - group.mean()) / (group.std() + 1e-8)
        assert torch.allclose(adv[i], a * mask[i], atol=1e-5)


def test_no_value_loss_without_returns():
    logprobs, values, old, old_values, returns = hand_minibatch()
    pg_loss, vf_loss, _ = ppo_losses(logprobs, values, old, old_values, ADV, None, MASK, PPOConfig())
    full_pg, _, _ = ppo_losses(logprobs, values, old, old_values, ADV, returns, MASK, PPOConfig())
    assert vf_loss.item() == 0 and pg_loss.item() == full_pg.item()


def make_rollout(model, tok, records, temperature=1.0):
    policy = dropout_off(PolicyWithValue(model))
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


# ----------------------------------------------------------------------------------------------
# The clipped losses on a hand-built minibatch: 2 rows, the second one token shorter (its last
# column is padding, filled with garbage that must not leak in). ε = 0.2, ε_v = 0.5 (≠ ε on purpose).

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
RATIO = [[1.5, 0.7, 1.3], [0.5, 1.1, 1.0]]      # ρ = π_θ / π_old per token (padding: old logprob −50)
ADV = torch.tensor([[1.0, 2.0, -1.0], [-1.0, 1.0, 7.0]])


def hand_minibatch():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.5, -0.2]], requires_grad=True)
    old = logprobs.detach() - torch.log(torch.tensor(RATIO))
    old[1, 2] = -50.0
    values = torch.tensor([[1.0, -1.0, 0.2], [0.0, 1.3, 9.0]], requires_grad=True)
    old_values = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, -9.0]])
    return logprobs, values, old, old_values, returns


@pytest.mark.parametrize("lora,checkpointing", [(True, False), (False, True), (True, True)])
def test_ratio_is_one_with_lora_and_gradient_checkpointing(tiny, world_records, tmp_path, lora, checkpointing):
    """The ratio-1 invariant holds when only adapters train and the reference is the same weights with
    the adapters off, and when the update recomputes each layer in backward (checkpointing really on:
    a layer runs once more per gradient forward). With LoRA the base weights never move."""
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, tok = trainable_model(str(tmp_path), "cpu", torch.float32, LoraConfig(rank=4) if lora else None,
                                 checkpointing)
    base_before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    ref = frozen_reference(model)
    torch.manual_seed(0)
    policy, batch = make_rollout(model, tok, world_records[:8], 0.7)
    forwards = []
    model.model.layers[0].self_attn.q_proj.register_forward_pre_hook(lambda *_: forwards.append(1))
    cfg = PPOConfig(lr=1e-2, epochs=2, minibatch_size=4)
    optimizer = torch.optim.AdamW([q for q in policy.parameters() if q.requires_grad], lr=cfg.lr)
    stats = ppo_update(policy, ref, optimizer, tok, batch, cfg, 0.7, Batches(world_records, 4, random.Random(0)),
                       torch.Generator().manual_seed(0))
    assert abs(stats[0]["ratio"] - 1) < 1e-5 and abs(stats[0]["approx_kl"]) < 1e-6 and stats[0]["retain_kl"] < 1e-6
    assert max(abs(s["ratio"] - 1) for s in stats[1:]) > 1e-3
    # per step: the PPO forward and the retain forward (each recomputed once in backward when checkpointing),
    # plus the reference's retain forward when the reference is this same model (LoRA)
    assert len(forwards) == len(stats) * (2 * (2 if checkpointing else 1) + (1 if lora else 0))
    after = model.state_dict()
    if lora:
        assert all(torch.equal(after[k], v) for k, v in base_before.items())
        assert all(q.requires_grad == ("lora_" in n) for n, q in model.named_parameters())


def test_ppo_losses_by_hand():
    logprobs, values, old, old_values, returns = hand_minibatch()
    cfg = PPOConfig(clip=0.2, vf_clip=0.5)
    pg_loss, vf_loss, stats = ppo_losses(logprobs, values, old, old_values, ADV, returns, MASK, cfg)
    # policy, per token max(−Aρ, −A·clip(ρ, 0.8, 1.2)):
    #   ρ 1.5, A +1: max(−1.5, −1.2) = −1.2   clipped (ρ > 1+ε helps no more)
    #   ρ 0.7, A +2: max(−1.4, −1.6) = −1.4   unclipped (pessimistic side)
    #   ρ 1.3, A −1: max( 1.3,  1.2) =  1.3   unclipped (pessimistic side)
    #   ρ 0.5, A −1: max( 0.5,  0.8) =  0.8   clipped (ρ < 1−ε helps no more)
    #   ρ 1.1, A +1: −1.1                     inside the clip range
    # mean over the 5 real tokens: (−1.2 − 1.4 + 1.3 + 0.8 − 1.1) / 5 = −1.6 / 5 = −0.32
    assert pg_loss.item() == pytest.approx(-0.32, abs=1e-6)
    # value, per token ½ max((V − R)², (clip(V, V_old ± 0.5) − R)²):
    #   V 1.0, old 0, R 2: max(1, (0.5 − 2)² = 2.25) = 2.25   clipped side
    #   V −1,  old 0, R 0: max(1, (−0.5)² = 0.25)    = 1      unclipped side
    #   V 0.2, old 0, R 0: 0.04                                inside
    #   V 0,   old 1, R 0: max(0, 0.5² = 0.25)        = 0.25   clipped side
    #   V 1.3, old 1, R 3: 1.7² = 2.89                         inside
    # ½ · (2.25 + 1 + 0.04 + 0.25 + 2.89) / 5 = 0.643
    assert vf_loss.item() == pytest.approx(0.643, abs=1e-6)
    # |ρ − 1| > 0.2 for 1.5, 0.7, 1.3, 0.5, not 1.1: clipfrac 4/5; mean ρ = 5.1 / 5 = 1.02
    assert stats["clipfrac"] == pytest.approx(0.8, abs=1e-6)
    assert stats["ratio"] == pytest.approx(1.02, abs=1e-6)
    # k3: mean (ρ − 1) − log ρ = (0.1 − log(1.5·0.7·1.3·0.5·1.1)) / 5
    assert stats["approx_kl"] == pytest.approx((0.1 - math.log(1.5 * 0.7 * 1.3 * 0.5 * 1.1)) / 5, abs=1e-6)
    # gradients: ∂L_clip/∂log π_θ = −Aρ/5 on unclipped tokens, 0 on clipped ones and padding
    # (descending L_clip raises log π where A > 0 and lowers it where A < 0)
    pg_loss.backward()
    assert torch.allclose(logprobs.grad, torch.tensor([[0.0, -2 * 0.7 / 5, 1.3 / 5], [0.0, -1.1 / 5, 0.0]]), atol=1e-6)
    # ∂(½ mean max(...))/∂V = (V − R)/5 on the unclipped side and inside, 0 on the clipped side
    vf_loss.backward()
    assert torch.allclose(values.grad, torch.tensor([[0.0, -1 / 5, 0.2 / 5], [0.0, -1.7 / 5, 0.0]]), atol=1e-6)


def test_ppo_update_uses_the_rollout_logprobs_values_and_temperature(tiny, world_records):
    """One minibatch, lr 0: ppo_update's statistics are those of the definitions on the policy's
    own logprobs (recomputed at the rollout temperature) against the batch's old logprobs."""
    model, tok = tiny
    temperature = 0.7
    torch.manual_seed(0)
    policy, batch = make_rollout(copy.deepcopy(model), tok, world_records[:8], temperature)
    mask = batch["response_mask"]
    g = torch.Generator().manual_seed(1)
    log_ratio = (torch.rand(mask.shape, generator=g) - 0.5) * mask            # ρ in [e^−½, e^½]
    new_logp = batch["logprobs"]
    batch.update(logprobs=new_logp - log_ratio, advantages=torch.randn(mask.shape, generator=g) * mask,
                 values=torch.randn(mask.shape, generator=g) * mask, returns=torch.randn(mask.shape, generator=g) * mask)
    cfg = PPOConfig(epochs=1, minibatch_size=8, clip=0.2, vf_clip=0.3)   # the optimizer below holds lr 0
    optimizer = torch.optim.AdamW(policy.parameters(), lr=0.0)
    stats = ppo_update(policy, None, optimizer, tok, batch, cfg, temperature)
    assert len(stats) == 1
    ratio, adv, n = log_ratio.exp(), batch["advantages"], mask.sum()
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    v_old, ret = batch["values"], batch["returns"]           # the policy's values are 0 (zero-init head)
    vf = 0.5 * torch.max(ret ** 2, (v_old + (0 - v_old).clamp(-0.3, 0.3) - ret) ** 2)
    assert stats[0]["ratio"] == pytest.approx(((ratio * mask).sum() / n).item(), abs=1e-5)
    assert stats[0]["clipfrac"] == pytest.approx(((((ratio - 1).abs() > 0.2) * mask).sum() / n).item(), abs=1e-6)
    assert stats[0]["approx_kl"] == pytest.approx((((ratio - 1 - log_ratio) * mask).sum() / n).item(), abs=1e-5)
    assert stats[0]["pg_loss"] == pytest.approx(((pg * mask).sum() / n).item(), abs=1e-5)
    assert stats[0]["vf_loss"] == pytest.approx(((vf * mask).sum() / n).item(), abs=1e-5)
    assert 0.2 < stats[0]["clipfrac"] < 0.8                  # both sides of the clip are in play


def test_update_raises_logprobs_of_positive_advantages_and_fits_values(tiny, world_records):
    model, tok = tiny
    torch.manual_seed(0)
    policy, batch = make_rollout(copy.deepcopy(model), tok, world_records[:8], 1.0)
    mask = batch["response_mask"]
    sign = torch.tensor([1.0, -1.0] * 4)[:, None]             # rows 0, 2, ... good; rows 1, 3, ... bad
    batch.update(advantages=sign * mask, returns=mask.clone())
    cfg = PPOConfig(lr=1e-3, epochs=1, minibatch_size=8, vf_coef=1.0)
    ppo_update(policy, None, torch.optim.AdamW(policy.parameters(), lr=cfg.lr), tok, batch, cfg, 1.0)
    with torch.no_grad():
        after = forward_logprobs(policy, batch["input_ids"], batch["attention_mask"], batch["n_response"], 1.0)
    change = ((after["logprobs"] - batch["logprobs"]) * mask).sum(-1)
    assert (change[sign[:, 0] > 0] > 0).all() and (change[sign[:, 0] < 0] < 0).all()
    # the value head moved from 0 toward the returns (1 on every real token)
    assert ((after["values"] * mask).sum() / mask.sum()).item() > 0.01


def test_retain_distillation_pulls_the_policy_to_the_reference(tiny, world_records):
    model, tok = tiny
    ref = copy.deepcopy(model).requires_grad_(False)
    torch.manual_seed(0)
    policy, batch = make_rollout(copy.deepcopy(model), tok, world_records[:4], 1.0)
    with torch.no_grad():
        policy.lm.lm_head.weight.add_(0.1 * torch.randn_like(policy.lm.lm_head.weight))
    zero = torch.zeros_like(batch["response_mask"])
    batch.update(advantages=zero, returns=zero, values=zero)   # only the retain term has a gradient
    before = retain_distillation(policy.lm, ref, tok, world_records[4:12]).item()
    cfg = PPOConfig(lr=3e-3, epochs=3, minibatch_size=4, retain_coef=1.0)
    ppo_update(policy, ref, torch.optim.AdamW(policy.parameters(), lr=cfg.lr), tok, batch, cfg, 1.0,
               iter(lambda: world_records[4:12], None))
    assert retain_distillation(policy.lm, ref, tok, world_records[4:12]).item() < 0.7 * before


# ----------------------------------------------------------------------------------------------
# Every KL against its definition, in its direction

def test_k3_approx_kl_is_kl_of_old_to_new():
    """On tokens drawn from π_old, mean (ρ − 1) − log ρ estimates KL(π_old ‖ π_θ). With π_old =
    (½, ¼, ⅛, ⅛), the 8 tokens [0, 0, 0, 0, 1, 1, 2, 3] are an exact sample: the mean is the expectation."""
    old_p, new_p = torch.tensor([0.5, 0.25, 0.125, 0.125]), torch.tensor([0.05, 0.05, 0.3, 0.6])
    y = torch.tensor([[0, 0, 0, 0, 1, 1, 2, 3]])
    zeros = torch.zeros(y.shape)
    _, _, stats = ppo_losses(new_p.log()[y], zeros, old_p.log()[y], zeros, zeros, zeros, torch.ones(y.shape), PPOConfig())
    forward = kl_divergence(Categorical(probs=old_p), Categorical(probs=new_p)).item()
    reverse = kl_divergence(Categorical(probs=new_p), Categorical(probs=old_p)).item()
    assert abs(forward - reverse) > 0.1                      # the two directions are told apart
    assert stats["approx_kl"] == pytest.approx(forward, abs=1e-6)


def test_token_reward_kl_is_kl_of_policy_to_reference():
    """kl_t = log π_θ(y_t) − log π_ref(y_t) on y_t ~ π_θ: its π_θ-weighted sum over every token is
    KL(π_θ ‖ π_ref), the direction of the penalty (METHOD.md §3)."""
    g = torch.Generator().manual_seed(0)
    policy, ref = Categorical(logits=2 * torch.randn(6, generator=g)), Categorical(logits=2 * torch.randn(6, generator=g))
    _, kl = token_rewards(torch.zeros(1), policy.logits[None], ref.logits[None], torch.ones(1, 6), kl_coef=0.1)
    forward, reverse = kl_divergence(policy, ref).item(), kl_divergence(ref, policy).item()
    assert abs(forward - reverse) > 0.1
    assert (policy.probs * kl[0]).sum().item() == pytest.approx(forward, abs=1e-5)


def test_retain_distillation_is_kl_of_reference_to_policy(tiny, world_records):
    """Mean over every answer token of the batch of KL(π_ref(·|x, y<t) ‖ π_θ(·|x, y<t)), checked
    row by row on unpadded sequences with torch.distributions."""
    model, tok = tiny
    policy = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        policy.lm_head.weight.add_(0.3 * torch.randn_like(policy.lm_head.weight))
    records = [world_records[0], {**world_records[1], "answer": "Yes."}, world_records[2]]   # left-padded batch
    ids, mask, answer_mask = encode_qa(tok, [r["question"] for r in records], [r["answer"] for r in records])
    forward, reverse = [], []
    with torch.no_grad():
        for i in range(len(records)):
            row, answer = ids[i][mask[i].bool()], answer_mask[i][mask[i].bool()].bool()
            at = answer.nonzero()[:, 0] - 1                 # the positions that predict answer tokens
            p_ref = Categorical(logits=model(row[None]).logits[0, at])
            p_pol = Categorical(logits=policy(row[None]).logits[0, at])
            forward.append(kl_divergence(p_ref, p_pol))
            reverse.append(kl_divergence(p_pol, p_ref))
    forward, reverse = torch.cat(forward).mean().item(), torch.cat(reverse).mean().item()
    assert abs(forward - reverse) > 0.05 * forward
    with torch.no_grad():
        assert retain_distillation(policy, model, tok, records).item() == pytest.approx(forward, rel=1e-4)


def test_retain_distillation_in_small_chunks_has_the_same_value_and_gradients(tiny, world_records, monkeypatch):
    """The float32 KL over the vocabulary in checkpointed chunks of 3 positions (recomputed in backward)
    against one chunk: the same loss and the same gradients."""
    from helpers import models
    model, tok = tiny
    policy = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        policy.lm_head.weight.add_(0.3 * torch.randn_like(policy.lm_head.weight))
    records = world_records[:4]

    def loss_and_grads():
        policy.zero_grad()
        loss = retain_distillation(policy, model, tok, records)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in policy.parameters()]

    whole, whole_grads = loss_and_grads()
    monkeypatch.setattr(models, "LOGPROB_CHUNK", 3)
    chunked, chunked_grads = loss_and_grads()
    assert chunked == pytest.approx(whole, rel=1e-5) and whole > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(chunked_grads, whole_grads))
