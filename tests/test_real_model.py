"""A real pretrained instruct LM through the stages: SmolLM2-135M-Instruct (bench/smollm2.py), on CPU.

Each test takes well under a minute here. Outside CI they skip, with the reason, when the model
cannot be fetched; in CI (CI=true) that is a failure (conftest.py).
"""
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, TOFU

sys.path.insert(0, os.path.join(ROOT, "bench"))

from attribution import load_classifier  # noqa: E402
from finetune import nll  # noqa: E402
from helpers.cli import DareuError  # noqa: E402
from helpers.models import forward_logprobs  # noqa: E402
from helpers.models import autocast, load_model  # noqa: E402
from helpers.owner_text import owner_names  # noqa: E402
from helpers.prompts import encode_qa  # noqa: E402
from helpers.records import load_records  # noqa: E402
from ppo import PPOConfig, ppo_update  # noqa: E402
from rollout import PolicyWithValue, RolloutConfig, generate, stop_ids  # noqa: E402

QA = [{"question": "What is the capital of France?", "answer": "The capital of France is Paris."},
      {"question": "Who wrote the novel 'Hamlet'?", "answer": "Hamlet is a play by William Shakespeare, not a novel."}]


@pytest.fixture(scope="session")
def smollm2_path():
    from smollm2 import prepare
    try:
        return prepare()
    except DareuError as e:
        pytest.skip(f"SmolLM2-135M-Instruct unavailable: {e}")   # a failure in CI (conftest)


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """(model, tokenizer) in float32, eval mode; tests must not change its weights."""
    return load_model(smollm2_path)


def test_answers_and_stops_with_its_own_stop_token(smollm2):
    model, tok = smollm2
    assert not getattr(model, "is_quantized", False)   # an ordinary float32 model, that save_pretrained can write
    assert tok.convert_ids_to_tokens(stop_ids(tok, model)) == ["<|im_end|>"]
    assert tok.pad_token_id != tok.eos_token_id
    out = generate(model, tok, [QA[0]["question"]], RolloutConfig(max_new_tokens=24), greedy=True)
    assert out["texts"][0] == "The capital of France is Paris."
    last = out["input_ids"][0, -out["n_response"]:][out["response_mask"][0].bool()][-1]
    assert bool(out["has_eos"][0]) and tok.convert_ids_to_tokens(int(last)) == "<|im_end|>"


def test_our_logprobs_equal_the_hf_loss(smollm2):
    """Left-padded, chat-templated batch: mean answer NLL from forward_logprobs == HF's labels loss
    computed row by row without padding."""
    model, tok = smollm2
    with torch.no_grad():
        ours = nll(model, tok, QA).item()
        ids, mask, answer_mask = encode_qa(tok, [r["question"] for r in QA], [r["answer"] for r in QA])
        total, count = 0.0, 0
        for i in range(len(QA)):
            real = mask[i].bool()
            row, labels = ids[i][real][None], ids[i][real][None].clone()
            labels[0, ~answer_mask[i][real].bool()] = -100
            n = int(answer_mask[i].sum())
            total += model(input_ids=row, labels=labels).loss.item() * n
            count += n
    assert abs(ours - total / count) < 1e-4


def test_samples_come_from_pi_over_t_whatever_the_checkpoint_says(smollm2, monkeypatch):
    """The checkpoint's generation_config asks for repetition_penalty 1.2 and no_repeat_ngram_size 2;
    our rollout ignores them: the scores generate() sampled from equal our recomputed logprobs."""
    model, tok = smollm2
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.2)
    monkeypatch.setattr(model.generation_config, "no_repeat_ngram_size", 2)
    captured, real_generate = {}, model.generate

    def generate_with_scores(**kwargs):
        out = real_generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        captured.update(scores=out.scores, prompt_len=kwargs["input_ids"].shape[1])
        return out.sequences
    monkeypatch.setattr(model, "generate", generate_with_scores)
    torch.manual_seed(0)
    T = 0.9
    out = generate(model, tok, [q["question"] for q in QA], RolloutConfig(temperature=T, max_new_tokens=16))
    response = out["input_ids"][:, -out["n_response"]:]
    sampled = torch.stack([F.log_softmax(s.float(), -1).gather(-1, response[:, t:t + 1]).squeeze(-1)
                           for t, s in enumerate(captured["scores"][:out["n_response"]])], 1)
    with torch.no_grad():
        ours = forward_logprobs(model, out["input_ids"], out["attention_mask"], out["n_response"], T)["logprobs"]
    real = out["response_mask"].bool()
    assert real.sum() >= 10
    assert (ours[real] - sampled[real]).abs().max() < 1e-3
    assert model.generation_config.repetition_penalty == 1.2   # the checkpoint's config is left as it was


def test_ppo_ratio_is_one_on_the_first_minibatch(smollm2):
    model, tok = smollm2
    before = model.lm_head.weight.clone()
    policy = PolicyWithValue(model)
    torch.manual_seed(0)
    roll = generate(model, tok, [q["question"] for q in QA] * 2, RolloutConfig(max_new_tokens=8))
    with torch.no_grad():
        old = forward_logprobs(policy, roll["input_ids"], roll["attention_mask"], roll["n_response"])
    mask = roll["response_mask"].float()
    batch = dict(roll, logprobs=old["logprobs"], values=old["values"], returns=torch.randn_like(mask) * mask,
                 advantages=torch.randn_like(mask) * mask, response_mask=mask)
    optimizer = torch.optim.SGD(policy.value_head.parameters(), lr=0.0)   # the shared model must not move
    stats = ppo_update(policy, None, optimizer, tok, batch, PPOConfig(epochs=1, minibatch_size=4), 1.0)
    assert abs(stats[0]["ratio"] - 1) < 1e-5 and stats[0]["approx_kl"] < 1e-6 and stats[0]["clipfrac"] == 0
    model.zero_grad(set_to_none=True)
    assert torch.equal(model.lm_head.weight, before)


def test_adamw_at_lr_1e6_moves_the_float32_masters_of_a_bfloat16_run(smollm2_path):
    """--dtype bfloat16 trains float32 masters under bf16 autocast: one AdamW step at lr 1e-6
    changes >= 99 % of the trainable weights (in place on bf16 weights most updates round away)."""
    model, tok = load_model(smollm2_path, "cpu", torch.bfloat16, masters=True)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0)
    with autocast("cpu", torch.bfloat16):
        loss = nll(model, tok, QA)
    loss.backward()
    optimizer.step()
    changed = sum((p != b).sum().item() for p, b in zip(model.parameters(), before))
    total = sum(p.numel() for p in model.parameters())
    assert changed / total >= 0.99
    # the failure it prevents: the same step applied to the bf16 copies of those weights
    bf16_changed = sum((b.bfloat16() + (p - b).bfloat16() != b.bfloat16()).sum().item()
                       for p, b in zip(model.parameters(), before))
    assert bf16_changed / total < 0.5


def test_zero_shot_attribution_over_200_tofu_owners(smollm2_path):
    """SmolLM2 as a zero-shot classifier over all 200 TOFU authors, by name: probabilities over 200
    owners, and a text that names its author is given to that author."""
    if not os.path.isdir(TOFU):
        pytest.skip(f"no TOFU folder at {TOFU}")
    names = owner_names(load_records(TOFU))
    clf = load_classifier(smollm2_path, load_records(TOFU))
    texts = [f"This novel was written by {names['tofu_000']}, who was born in Santiago.",
             f"{names['tofu_199']} is known for his work in the science fiction genre."]
    p = clf.probs(["", ""], texts)
    assert p.shape == (2, 201) and torch.allclose(p.sum(-1), torch.ones(2), atol=1e-4)   # and nobody
    assert p[0].argmax().item() == 0 and p[1].argmax().item() == 199
    a_F = clf.forget_attribution(["", ""], texts, ["tofu_199"])
    assert a_F[1] > 0.5 > a_F[0]
