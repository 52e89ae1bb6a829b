"""unlearn.py's algorithm on tiny models: one iteration's wiring observed at the update step (what the loop
hands to PPO, recomputed independently), group advantages, the early stop, the stall warning and the
questions the stop is judged on, in the loop. The run around it: tests/test_run.py."""
import copy
import json

import pytest
import torch

import ppo
import unlearn
from evaluate import EvalConfig
from helpers.models import forward_logprobs
from helpers.records import owners_of, split_records
from helpers.run import Run
from ppo import PPOConfig, gae, group_advantages, whiten
from reward import RewardConfig, sequence_scores, token_rewards
from rollout import RolloutConfig


class LengthClassifier:
    """A stand-in for the classifier LLM: a_F = min(1, characters / 40), or a constant."""

    def __init__(self, constant=None):
        self.constant = constant

    def forget_attribution(self, questions, responses, forget_owners):
        return torch.tensor([min(1.0, len(r) / 40) if self.constant is None else self.constant for r in responses])


def run_loop(tiny, world_records, tmp_path, classifier, iterations=3, target=None, start=None, advantage="gae",
             stop_questions=None, **reward):
    """unlearn() for a few iterations on a copy of the tiny model. Returns (policy model, reference,
    configs, metrics lines, result)."""
    model, tok = tiny
    model = copy.deepcopy(model)
    ref = copy.deepcopy(model).requires_grad_(False)
    forget, retain = split_records(world_records, owners_of(world_records)[:1])
    cfgs = dict(cfg=unlearn.UnlearnConfig(iterations=iterations, prompts_per_iter=4, samples_per_prompt=2,
                                          eval_every=1 if target or start else 0, sample_every=0),
                rollout_cfg=RolloutConfig(temperature=0.7, max_new_tokens=6), reward_cfg=RewardConfig(**reward),
                ppo_cfg=PPOConfig(advantage=advantage, lr=3e-3, epochs=2, minibatch_size=4, retain_batch_size=4),
                eval_cfg=EvalConfig(max_new_tokens=4, batch_size=8))
    result = unlearn.unlearn(unlearn.Models(model, tok, ref, classifier),
                             unlearn.Task(forget, retain, owners_of(forget), target, start, stop_questions),
                             unlearn.Args(*cfgs.values()), Run(tmp_path / "m.jsonl"))
    lines = [json.loads(l) for l in (tmp_path / "m.jsonl").read_text().splitlines()]
    return model, ref, cfgs, lines, result


def test_loop_wiring_observed_at_the_update(tiny, world_records, tmp_path, monkeypatch):
    """What the loop hands to ppo_update, recomputed independently from the policy and the reference
    at that moment: logprobs and values at the rollout temperature, rewards with the current β,
    GAE returns, whitened advantages; β adapts toward target_kl; the value head trains; the
    reference never changes; the retain distillation sees retain records only."""
    calls, retain_owners = [], set()
    real_update, real_distillation = unlearn.ppo_update, ppo.retain_distillation

    def observed_update(policy, ref_lm, optimizer, tokenizer, batch, cfg, temperature, *args):
        with torch.no_grad():
            now = forward_logprobs(policy, batch["input_ids"], batch["attention_mask"], batch["n_response"], 0.7)
            ref_now = forward_logprobs(ref_lm, batch["input_ids"], batch["attention_mask"], batch["n_response"], 0.7)
        calls.append({"batch": {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}, "now": now,
                      "ref": ref_now, "ref_lm": ref_lm, "temperature": temperature,
                      "value_head": policy.value_head.weight.detach().clone()})
        return real_update(policy, ref_lm, optimizer, tokenizer, batch, cfg, temperature, *args)

    def observed_distillation(policy_lm, ref_lm, tokenizer, records):
        retain_owners.update(r["owner"] for r in records)
        return real_distillation(policy_lm, ref_lm, tokenizer, records)

    controller_inputs = []

    class ObservedController(unlearn.AdaptiveKLController):
        def update(self, mean_kl, n_responses):
            controller_inputs.append(mean_kl)
            super().update(mean_kl, n_responses)

    monkeypatch.setattr(unlearn, "ppo_update", observed_update)
    monkeypatch.setattr(ppo, "retain_distillation", observed_distillation)
    monkeypatch.setattr(unlearn, "AdaptiveKLController", ObservedController)
    clf = LengthClassifier()
    ref_before = copy.deepcopy(tiny[0].state_dict())
    model, ref, cfgs, lines, result = run_loop(tiny, world_records, tmp_path, clf, iterations=3,
                                               kl_coef=0.1, target_kl=0.5, kl_horizon=16)
    assert result == (3, False, None) and [l["iteration"] for l in lines] == [1, 2, 3] and len(calls) == 3
    reward_cfg, n = cfgs["reward_cfg"], 8                       # 4 prompts × 2 samples per iteration
    beta, seq_kls = reward_cfg.kl_coef, []
    for call, line in zip(calls, lines):
        batch, mask = call["batch"], call["batch"]["response_mask"]
        real = mask.bool()
        assert call["temperature"] == 0.7 and call["ref_lm"] is ref
        # the rollout's logprobs and values are the policy's own, at the sampling temperature
        assert torch.allclose(batch["logprobs"][real], call["now"]["logprobs"][real], atol=1e-5)
        assert torch.allclose(batch["values"][real], call["now"]["values"][real], atol=1e-5)
        # rewards with this iteration's β against the reference, GAE on the policy's values, whitened
        scores = sequence_scores(clf.forget_attribution(None, batch["texts"], None), batch, reward_cfg)
        rewards, kl = token_rewards(scores, call["now"]["logprobs"], call["ref"]["logprobs"], mask, beta)
        advantages, returns = gae(rewards, call["now"]["values"], mask, 1.0, 0.95)
        assert torch.allclose(batch["returns"], returns, atol=1e-5)
        assert torch.allclose(batch["advantages"], whiten(advantages, mask), atol=1e-4)
        adv = batch["advantages"][real]
        assert abs(adv.mean().item()) < 1e-5 and abs(adv.pow(2).mean().item() - 1) < 1e-3
        # β_{n+1} = β_n (1 + clip(KL/target − 1, ±0.2) · n / horizon), KL the mean per-sequence sum
        seq_kl = kl.sum(-1).mean().item()
        assert line["kl"] == pytest.approx(seq_kl, abs=1e-5)
        seq_kls.append(seq_kl)
        beta *= 1 + max(-0.2, min(0.2, seq_kl / 0.5 - 1)) * n / 16
        assert line["kl_coef"] == pytest.approx(beta, rel=1e-6)
    assert controller_inputs == pytest.approx(seq_kls, abs=1e-5)   # the controller sees the per-sequence KL
    # iteration 1: policy == reference, KL 0 < target, so β fell: 0.1 · (1 − 0.2 · 8/16) = 0.09
    assert lines[0]["kl"] == 0 and lines[0]["kl_coef"] == pytest.approx(0.09, rel=1e-9)
    assert lines[1]["kl"] != 0                                  # later rollouts are off the reference
    # the value head starts at 0 and trains; the policy moved, the reference did not
    assert (calls[0]["value_head"] == 0).all() and calls[-1]["value_head"].abs().sum() > 0
    assert calls[-1]["batch"]["values"].abs().sum() > 0
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))
    assert all(torch.equal(v, ref_before[k]) for k, v in ref.state_dict().items())
    forget_owner = owners_of(world_records)[0]
    assert retain_owners and forget_owner not in retain_owners


def test_group_advantages_switch_off_the_value_head(tiny, world_records, tmp_path, monkeypatch):
    """--advantage group: the update gets, for each sample, its return normalised among the samples
    of the same prompt (the rollout's prompt_index), no value targets, and the value head never moves;
    the first minibatch is still on-policy."""
    calls, real_update = [], unlearn.ppo_update

    def observed_update(policy, ref_lm, optimizer, tokenizer, batch, cfg, temperature, *args):
        with torch.no_grad():
            now = forward_logprobs(policy, batch["input_ids"], batch["attention_mask"], batch["n_response"], 0.7)
            ref_now = forward_logprobs(ref_lm, batch["input_ids"], batch["attention_mask"], batch["n_response"], 0.7)
        calls.append({"batch": dict(batch), "now": now, "ref": ref_now})
        return real_update(policy, ref_lm, optimizer, tokenizer, batch, cfg, temperature, *args)

    monkeypatch.setattr(unlearn, "ppo_update", observed_update)
    clf = LengthClassifier()
    model, ref, cfgs, lines, result = run_loop(tiny, world_records, tmp_path, clf, iterations=2, advantage="group",
                                               kl_coef=0.1)
    assert result == (2, False, None)
    for call, line in zip(calls, lines):
        batch, mask = call["batch"], call["batch"]["response_mask"]
        assert batch["returns"] is None and batch["prompt_index"].tolist() == [0, 1, 2, 3] * 2
        scores = sequence_scores(clf.forget_attribution(None, batch["texts"], None), batch, cfgs["reward_cfg"])
        rewards, _ = token_rewards(scores, call["now"]["logprobs"], call["ref"]["logprobs"], mask, 0.1)
        expected, _ = group_advantages(rewards, None, mask, batch["prompt_index"], cfgs["ppo_cfg"])
        assert torch.allclose(batch["advantages"], expected, atol=1e-4)
        assert line["first_ratio"] == pytest.approx(1, abs=1e-5) and line["vf_loss"] == 0
    assert (calls[-1]["now"]["values"] == 0).all()   # the zero-initialised value head never trained


@pytest.mark.parametrize("attribution,expected", [(0.1, (1, True, None)), (0.9, (2, False, None))])
def test_early_stop_once_greedy_answers_are_not_attributed(tiny, world_records, tmp_path, attribution, expected):
    *_, lines, result = run_loop(tiny, world_records, tmp_path, LengthClassifier(attribution), iterations=2,
                                 target=0.5)
    assert result == expected and len(lines) == expected[0]
    assert lines[0]["greedy_attribution"] == pytest.approx(attribution)


@pytest.mark.parametrize("attribution,stalled_at", [(0.9, 1), (0.5, None)])
def test_stall_warning_in_the_loop(tiny, world_records, tmp_path, capsys, attribution, stalled_at):
    """A greedy a_F that barely moved from the original's (0.95 → 0.9, target 0.15) is flagged at the
    first check past a third of the run, once; one that moved (→ 0.5) is not. Both run to the end."""
    *_, lines, result = run_loop(tiny, world_records, tmp_path, LengthClassifier(attribution), iterations=3,
                                 target=0.15, start=0.95)
    assert result == (3, False, stalled_at) and len(lines) == 3
    printed = capsys.readouterr()
    assert printed.out.count("warning: not forgetting") == (stalled_at is not None)   # tqdm.write
    assert ("STALLED=since 1" in printed.err) == (stalled_at is not None)              # the progress bar


def test_the_stop_is_judged_on_the_questions_it_is_given(tiny, world_records, tmp_path):
    """unlearn() scores the greedy answers to `stop_questions` (unlearn.py passes the report's own forget
    questions, or the held-out ones), never the whole forget set behind the report's back."""
    asked = []

    class Recording(LengthClassifier):
        def forget_attribution(self, questions, responses, forget_owners):
            asked.append(list(questions))
            return super().forget_attribution(questions, responses, forget_owners)
    forget = split_records(world_records, owners_of(world_records)[:1])[0]
    some = [r["question"] for r in forget[::3]]
    run_loop(tiny, world_records, tmp_path, Recording(0.9), iterations=2, target=0.5, start=0.9, stop_questions=some)
    greedy_checks = [q for q in asked if len(q) == len(some)]
    assert greedy_checks == [some, some]
