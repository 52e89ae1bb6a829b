"""unlearn.py: the loop's wiring observed at the update step on tiny models, the early stop, the
embedded world end to end, and bad input: one-line errors, nothing written."""
import copy
import hashlib
import json
import os

import pytest
import torch

import ppo
import unlearn
from attribution import PROBES
from conftest import run_python
from evaluate import EvalConfig
from helpers.models import forward_logprobs
from helpers.records import owners_of, split_records
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
    result = unlearn.unlearn(model, tok, ref, classifier, forget, retain, owners_of(forget),
                             metrics_path=tmp_path / "m.jsonl", target=target, start=start,
                             stop_questions=stop_questions, **cfgs)
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


def test_stall_rule_by_hand():
    """Stalled once a third of the iterations ran and under a tenth of the gap start → target is closed."""
    assert unlearn.stalled(0.95, 0.90, 0.15, it=10, iterations=30)        # moved 0.05 < 0.08
    assert not unlearn.stalled(0.95, 0.86, 0.15, it=10, iterations=30)    # moved 0.09 >= 0.08
    assert not unlearn.stalled(0.95, 0.95, 0.15, it=9, iterations=30)     # too early to say
    assert unlearn.stalled(0.95, 0.96, 0.0, it=30, iterations=30)         # a_F went up, no target


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


def test_target_is_the_retain_level():
    """max(2 × level, 0.15), the level from the retain model when given, else from the original's answers
    to other owners' questions, else (no --data) from the texts that carry no owner's information; an
    explicit target wins."""
    cfg, probes = unlearn.UnlearnConfig(), {"I don't know.": 0.1, "": 0.3}
    original = {"forget_attribution": 0.9, "retain_attribution": 0.02}
    assert unlearn.resolve_target(cfg, {"original": original, "retain": {"forget_attribution": 0.2}}, probes)[:2] == \
        (0.4, 0.2)
    assert unlearn.resolve_target(cfg, {"original": original, "retain": {"forget_attribution": 0.01}}, probes)[:2] == \
        (0.15, 0.01)
    assert unlearn.resolve_target(cfg, {"original": original}, probes)[:2] == (0.15, 0.02)
    no_data = {"forget_attribution": 0.9, "retain_attribution": None}
    assert unlearn.resolve_target(cfg, {"original": no_data}, probes)[:2] == (0.4, 0.2)
    explicit = unlearn.UnlearnConfig(target_attribution=0.3)
    assert unlearn.resolve_target(explicit, {"original": original}, probes)[0] == 0.3


def test_a_run_too_big_for_the_gpu_is_refused_before_loading(tmp_path, monkeypatch):
    """unlearn.py's memory check on a GPU, before any weight is loaded: Llama-2-7B's config.json alone, an
    80 GB device (its capacity given to the check), full fine-tuning refused naming --lora, which fits."""
    from types import SimpleNamespace

    from helpers.lora import LoraConfig
    from helpers.memory import CONFIGS
    (tmp_path / "config.json").write_text(json.dumps(CONFIGS["llama2-7b"]))
    monkeypatch.setattr(unlearn.torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80e9))
    args = SimpleNamespace(model=str(tmp_path), classifier=str(tmp_path), device="cuda", classifier_device=None,
                           gradient_checkpointing=False)
    configs = (unlearn.UnlearnConfig(), RolloutConfig(), PPOConfig(), None, torch.bfloat16)
    with pytest.raises(unlearn.DareuError, match=r"^full fine-tuning of .* needs about 1\d\d GiB .* --lora"):
        unlearn.check_memory(args, *configs)
    args.gradient_checkpointing = True
    unlearn.check_memory(args, *configs[:3], LoraConfig(), torch.bfloat16)   # fits: no error


def test_fit_check_counts_the_original_answers_that_end_within_the_rollout_length(default_world, capsys):
    """The embedded world's original answers in about 20 tokens: none fit in 1, all in 64."""
    from helpers.models import load_model
    _, world, _, _ = default_world
    model, tok = load_model(str(world / "original"))
    questions = [json.loads(line)["question"] for line in (world / "records.jsonl").read_text().splitlines()[:6]]
    assert unlearn.check_fit(model, tok, questions, RolloutConfig(max_new_tokens=64), EvalConfig(batch_size=4)) == 1.0
    assert unlearn.check_fit(model, tok, questions, RolloutConfig(max_new_tokens=1), EvalConfig(batch_size=4)) == 0
    assert "warning: the rest earn the missing-EOS penalty" in capsys.readouterr().out


@pytest.mark.parametrize("original,target,level,explicit,refused", [
    (0.90, 0.92, 0.46, False, True),    # the retain level's target above the original: "reached" at once
    (0.90, 0.85, 0.20, True, True),     # an explicit target within --min-signal of the original
    (0.55, 0.50, 0.25, False, True),    # a classifier that hardly tells the original from the retain level
    (0.90, 0.40, 0.20, False, False),   # 0.5 below: a run has to forget to reach it
    (0.90, 0.80, 0.20, True, False),    # exactly --min-signal below
])
def test_a_target_must_lie_below_the_original_by_min_signal(original, target, level, explicit, refused):
    cfg = unlearn.UnlearnConfig(min_signal=0.1, target_attribution=target if explicit else None)
    if not refused:
        unlearn.check_target(original, target, level, "the retain model's forget answers", cfg)
        return
    with pytest.raises(unlearn.DareuError) as error:
        unlearn.check_target(original, target, level, "the retain model's forget answers", cfg)
    line = str(error.value)
    assert f"the target a_F {target:.3f}" in line and f"original's greedy forget a_F {original:.3f}" in line
    assert "--min-signal 0.1" in line and ("--target-attribution" in line if explicit else f"{level:.3f}" in line)


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


def test_default_run_end_to_end(default_world):
    cache, world, out, proc = default_world
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("forget_attribution", "forget_rouge", "retain_rouge"):
        assert {"original", "unlearned", "retain"} <= set(summary[key])
        assert all(0 <= v <= 1 for v in summary[key].values())
    assert summary["seconds"] > 0 and summary["iterations"] == 2
    # the target is the retain level (METHOD.md §6), not reached in 2 iterations; the rollout length fits
    assert summary["target"]["attribution"] == max(2 * summary["forget_attribution"]["retain"], 0.15)
    assert summary["target"]["reached"] is False and summary["rollout_fits"] == 1.0
    # the stop and `reached` are judged on the report's own forget questions: the last greedy check (after the
    # last update) is the report's number for the model as written
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["greedy_attribution"] == pytest.approx(summary["forget_attribution"]["unlearned"], abs=1e-6)
    assert summary["target"]["final"] == summary["forget_attribution"]["unlearned"]
    # the classifier attributes the original model's forget answers to F, the retain model's not
    assert summary["forget_attribution"]["original"] > 0.8
    assert summary["forget_attribution"]["retain"] < 0.3
    # the original says the forget owner's facts, the retain model, which never saw them, hardly any
    assert summary["forget_facts"]["original"] > 0.8 and summary["forget_facts"]["retain"] < 0.3
    assert "| forget_facts |" in proc.stdout
    # ... but repeats the question's name, as a retrained LLM would (world.renamed_copies)
    name = summary["forget_owners"][0]
    assert sum(name in a for a in summary["answers"]["retain"]["forget"]["generated"]) >= 10
    # the classifier report: held-out scores from classifier.json, the probes, the fact probe over the
    # report's three models (12 forget answers each), recomputed here from the answers it pooled
    report = summary["classifier_report"]
    meta = json.loads((world / "classifier" / "classifier.json").read_text())
    assert (report["heldout_accuracy"], report["heldout_ece"]) == (meta["heldout_accuracy"], meta["heldout_ece"])
    assert set(report["probes"]) == set(PROBES) and report["probes"]["I don't know."] < 0.2
    from helpers.metrics import spearman
    answers = summary["answers"]
    a_f = [a for c in ("original", "retain", "unlearned") for a in answers[c]["forget"]["attribution"]]
    rouge = [r for c in ("original", "retain", "unlearned") for r in answers[c]["forget"]["rouge"]]
    assert report["fact_probe"] == {"spearman": pytest.approx(spearman(a_f, rouge)), "answers": len(a_f)}
    assert report["fact_probe"]["spearman"] > 0.5 and "classifier report: a_F at most" in proc.stdout
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["iteration"] for l in lines] == [1, 2]
    assert abs(lines[0]["first_ratio"] - 1) < 1e-4 and "greedy_attribution" in lines[0]
    assert "| forget_attribution |" in proc.stdout
    # Hugging Face format in and out
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.pad_token_id != tok.eos_token_id
    ids = tok("Question: Where?\nAnswer:", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] >= len(tok)
    # the run changed the model, not its input
    original = AutoModelForCausalLM.from_pretrained(world / "original")
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), original.parameters()))
    assert not [p for p in os.listdir(out.parent) if ".tmp-" in p]        # no staging leftovers
    # where the time went: every phase of every iteration, summed in the summary and printed
    assert set(lines[0]["seconds"]) == {"rollout", "logprobs", "scoring", "update", "retain", "greedy_check"}
    assert summary["phase_seconds"]["update"] == pytest.approx(sum(l["seconds"]["update"] for l in lines), abs=1e-2)
    assert "where the PPO time went: rollout" in proc.stdout


def test_the_design_card_command_runs_without_data(default_world, tmp_path):
    """`unlearn.py --model M --forget FILE`: the forget owners' records alone, no --data. The run says what it
    cannot do and does the rest: no retain distillation, no retain questions in the report, the retain level
    from texts that carry no owner's information. The default classifier, the model itself asked zero-shot,
    needs a chat template, which the world's tiny model lacks: refused in one line; its trained one runs."""
    cache, world, _, _ = default_world
    owner = json.loads((world / "world.json").read_text())["forget"][0]
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(l + "\n" for l in (world / "records.jsonl").read_text().splitlines()
                              if json.loads(l)["owner"] == owner))
    common = ["unlearn.py", "--model", str(world / "original"), "--forget", str(forget), "--iterations", "2",
              "--eval-every", "1", "--eval-max-new-tokens", "48", "--sample-every", "0"]
    proc = run_python([*common, "--out", str(tmp_path / "zero-shot")])
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith("with a chat template")
    assert not (tmp_path / "zero-shot").exists()
    out = tmp_path / "out"
    proc = run_python([*common, "--classifier", str(world / "classifier"), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no --data: no retain records, so no retain distillation" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["forget_owners"] == [owner] and summary["retain_rouge"]["unlearned"] is None
    assert summary["target"]["level_from"] == "7 texts that carry no owner's information"
    assert summary["target"]["retain_level"] == pytest.approx(
        sum(summary["classifier_report"]["probes"].values()) / len(PROBES))
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["retain_kl"] == 0 for line in lines)


def test_default_run_with_lora_and_gradient_checkpointing(default_world, tmp_path):
    """--lora --gradient-checkpointing on the embedded world: on-policy first minibatch, a merged output
    in the original's format (no adapter keys) that differs from the original only in the adapted
    projections, and --lora-merge false writes the adapters alone, which load as the same model."""
    cache, world, _, _ = default_world
    out = tmp_path / "lora"
    proc = run_python(["unlearn.py", "--out", str(out), "--iterations", "2", "--eval-every", "1", "--lora",
                       "--lora-rank", "8", "--gradient-checkpointing", "--sample-every", "0"],
                      env={"DAREU_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(LoRA rank 8); gradient checkpointing" in proc.stdout
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert abs(lines[0]["first_ratio"] - 1) < 1e-4 and lines[1]["kl"] != 0     # the policy moved off the reference
    from transformers import AutoModelForCausalLM
    merged = AutoModelForCausalLM.from_pretrained(out).state_dict()
    original = AutoModelForCausalLM.from_pretrained(world / "original").state_dict()
    assert merged.keys() == original.keys()
    changed = {k for k in merged if not torch.equal(merged[k], original[k])}
    assert changed and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                                       "gate_proj.weight", "up_proj.weight", "down_proj.weight")) for k in changed)
    adapters = tmp_path / "adapters"
    proc = run_python(["unlearn.py", "--out", str(adapters), "--iterations", "2", "--eval-every", "1", "--lora",
                       "--lora-rank", "8", "--gradient-checkpointing", "--sample-every", "0", "--lora-merge", "false"],
                      env={"DAREU_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"adapters.safetensors", "lora.json"} <= set(os.listdir(adapters))
    from helpers.models import load_model
    ids = torch.arange(5, 25)[None]
    with torch.no_grad():   # the same run: the adapters applied unmerged compute the merged model's logits
        assert torch.allclose(load_model(str(adapters))[0](input_ids=ids).logits,
                              load_model(str(out))[0](input_ids=ids).logits, atol=1e-5)


def test_a_run_that_does_not_forget_says_so_and_writes_nothing_when_asked(default_world, tmp_path):
    """A learning rate too small to forget: the stall warning on the way, and with --require-target an exit
    with one error line (after the progress bar) naming the knobs, and no output, staging or checkpoint
    left behind. A classifier asked for more signal than it has (--min-signal 0.999 > the world's gap of
    about 0.98) is refused before PPO, writing nothing either, and so is a target any answer meets (1: the
    run would "reach" it without forgetting)."""
    cache, _, _, _ = default_world
    runs = tmp_path / "runs"
    runs.mkdir()
    proc = run_python(["unlearn.py", "--out", str(runs / "stalled"), "--lr", "1e-9", "--iterations", "3",
                       "--eval-every", "1", "--sample-every", "0", "--require-target"], env={"DAREU_CACHE": str(cache)})
    error = last_line_error(proc)
    assert "target not reached" in error and "a larger --lr (now 1e-09)" in error
    assert "warning: not forgetting" in proc.stdout and "STALLED=since 1" in proc.stderr
    assert os.listdir(runs) == []
    proc = run_python(["unlearn.py", "--out", str(runs / "blind"), "--iterations", "1", "--min-signal", "0.999"],
                      env={"DAREU_CACHE": str(cache)})
    error = last_line_error(proc)
    assert "is not below the original's greedy forget a_F 0.9" in error and "--min-signal 0.999" in error
    assert "classifier: forget a_F 0.9" in proc.stdout and os.listdir(runs) == []
    assert "DareU" not in proc.stderr   # refused before the PPO loop's progress bar
    proc = run_python(["unlearn.py", "--out", str(runs / "met"), "--iterations", "3", "--target-attribution", "1"],
                      env={"DAREU_CACHE": str(cache)})
    assert "the target a_F 1.000 (--target-attribution) is not below" in last_line_error(proc)
    assert os.listdir(runs) == []


def test_stop_on_heldout_judges_questions_the_report_does_not_score(default_world, tmp_path):
    """--stop-on heldout: a quarter of each forget owner's questions decide the stop and `reached`; the report
    scores the rest. The last greedy check and the final a_F are the same number (the same questions, the
    same model as written), and the original's a_F is taken on those questions too."""
    cache, world, _, _ = default_world
    out = tmp_path / "heldout"
    proc = run_python(["unlearn.py", "--out", str(out), "--iterations", "2", "--eval-every", "1", "--sample-every", "0",
                       "--stop-on", "heldout"], env={"DAREU_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    stop, report = summary["target"]["questions"], summary["answers"]["original"]["forget"]["generated"]
    assert len(stop) == 3 and len(report) == 9 and summary["target"]["judged_on"] == "heldout"
    forget = [json.loads(l) for l in (world / "records.jsonl").read_text().splitlines()]
    forget = [r["question"] for r in forget if r["owner"] == summary["forget_owners"][0]]
    assert set(stop) < set(forget) and "judged on 3 held-out forget questions" in proc.stdout
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["greedy_attribution"] == pytest.approx(summary["target"]["final"], abs=1e-6)
    assert summary["target"]["reached"] == (summary["target"]["final"] <= summary["target"]["attribution"])


def last_line_error(proc):
    """A failure after work began (progress bars on stderr): one `error:` line, the last, no traceback."""
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr[-2000:]
    return errors[0]


def test_every_stage_has_help():
    for stage in ("data.py", "world.py", "rollout.py", "reward.py", "ppo.py", "finetune.py", "attribution.py",
                  "unlearn.py", "evaluate.py"):
        proc = run_python([stage, "--help"])
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (stage, proc.stderr[-500:])


def test_a_subprocess_past_its_timeout_fails_naming_the_command():
    with pytest.raises(pytest.fail.Exception, match=r"timed out after 1 s running `python -c import time"):
        run_python(["-c", "import time; time.sleep(60)"], timeout=1)


def tree_hash(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


@pytest.fixture()
def bad_input_case(default_world, tmp_path):
    """Run unlearn.py with one input wrong; returns a function giving (process, out folder)."""
    _, world, _, _ = default_world
    records = (world / "records.jsonl").read_text().splitlines()
    owner = json.loads(records[0])["owner"]
    base = {"--model": str(world / "original"), "--data": str(world / "records.jsonl"), "--forget": owner,
            "--classifier": str(world / "classifier"), "--out": str(tmp_path / "out"), "--iterations": "1"}

    def run(**changes):
        args = {**base, **{"--" + k.replace("_", "-"): v for k, v in changes.items()}}
        before = tree_hash(world)
        proc = run_python(["unlearn.py", *[x for kv in args.items() for x in kv]])
        assert tree_hash(world) == before, "an input was modified"
        return proc, args["--out"]
    return run, world, records


def assert_one_line_error(proc, out, *fragments):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    parent = os.path.dirname(out)
    assert not os.path.exists(out) and not [p for p in os.listdir(parent) if ".tmp-" in p]


def test_bad_inputs_exit_with_one_line_and_write_nothing(bad_input_case, tmp_path):
    run, world, records = bad_input_case
    proc, out = run(data=str(tmp_path / "missing.jsonl"))
    assert_one_line_error(proc, out, "no such file", "missing.jsonl")

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(records[:4] + ['{"owner": "x", "question": ']) + "\n")
    proc, out = run(data=str(bad))
    assert_one_line_error(proc, out, "line 5")

    proc, out = run(forget="Nobody Atall")
    assert_one_line_error(proc, out, "unknown owner", "Nobody Atall", "valid owners", json.loads(records[0])["owner"])

    proc, out = run(forget=" , ")
    assert_one_line_error(proc, out, "empty")

    proc, out = run(out=str(world / "original"))
    assert proc.returncode != 0 and "would overwrite" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    proc, out = run(model=str(tmp_path / "no-model"))
    assert_one_line_error(proc, out, "no such model folder")

    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{}")
    proc, out = run(model=str(not_a_model))
    assert_one_line_error(proc, out, "cannot load", "not-a-model")
