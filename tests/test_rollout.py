"""rollout.py: sampled logprobs that match the recomputed ones, EOS truncation at any stop id, the value
head's positions, the rollout's own generation config and its length, prompt_index."""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, GenerationConfig

from helpers.models import forward_logprobs, load_model
from helpers.prompts import encode_prompts, prompt_ids
from rollout import PolicyWithValue, RolloutConfig, fit_length, generate, rollout, stop_ids, truncate_after_eos


def test_truncate_after_eos_keeps_first_eos_and_masks_the_rest():
    eos, pad = 2, 9
    responses = torch.tensor([[5, 6, 2, 7, 2], [5, 2, 2, 2, 2], [5, 6, 7, 8, 4], [2, 5, 5, 5, 5]])
    out, mask, has_eos = truncate_after_eos(responses, eos, pad)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert out.tolist() == [[5, 6, 2, pad, pad], [5, 2, pad, pad, pad], [5, 6, 7, 8, 4], [2, pad, pad, pad, pad]]
    assert has_eos.tolist() == [True, True, False, True]


def test_generate_then_recompute_logprobs_matches_generation_scores(tiny, world_records):
    """The sampled tokens' logprobs under generate() (its scores) equal forward_logprobs over the
    padded prompt+response: same position ids, same temperature."""
    model, tok = tiny
    torch.manual_seed(0)
    questions = [r["question"] for r in world_records[:4]]
    prompt, prompt_mask = encode_prompts(tok, questions)
    T = 1.3
    out = model.generate(input_ids=prompt, attention_mask=prompt_mask, do_sample=True, temperature=T, top_k=0,
                         top_p=1.0, max_new_tokens=6, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    response = out.sequences[:, prompt.shape[1]:]
    gen_logp = torch.stack([F.log_softmax(s, -1).gather(-1, response[:, t:t + 1]).squeeze(-1)
                            for t, s in enumerate(out.scores)], 1)
    _, response_mask, _ = truncate_after_eos(response, tok.eos_token_id, tok.pad_token_id)
    full_mask = torch.cat([prompt_mask, response_mask], 1)
    ours = forward_logprobs(model, out.sequences, full_mask, response.shape[1], T)["logprobs"]
    real = response_mask.bool()
    assert real.sum() > 10
    assert torch.allclose(ours[real], gen_logp[real], atol=1e-4)


def test_generate_batches_masks_and_texts(tiny, world_records):
    model, tok = tiny
    questions = [r["question"] for r in world_records[:5]]
    out = generate(model, tok, questions, RolloutConfig(max_new_tokens=8, batch_size=2))
    B, R = len(questions), out["n_response"]
    assert out["input_ids"].shape[0] == B and out["response_mask"].shape == (B, R)
    # a response is a prefix of 1s; everything after it is pad
    m = out["response_mask"]
    assert torch.equal(m, m.cummin(dim=1).values)
    assert (out["input_ids"][:, -R:][m == 0] == tok.pad_token_id).all()
    assert len(out["texts"]) == B


def test_value_head_starts_at_zero(tiny, world_records):
    model, tok = tiny
    ids, mask = encode_prompts(tok, [r["question"] for r in world_records[:3]])
    out = forward_logprobs(PolicyWithValue(model), ids, mask, 4)
    assert torch.equal(out["values"], torch.zeros_like(out["values"]))


def test_values_are_those_of_the_states_before_each_response_token(tiny, world_records):
    """values[:, t] = V(s_t), s_t = the prompt and the response tokens before token t: checked against
    the value head on each unpadded prefix's last hidden state."""
    model, tok = tiny
    policy = PolicyWithValue(model)
    torch.manual_seed(0)
    with torch.no_grad():
        policy.value_head.weight.normal_()
    ids, mask = encode_prompts(tok, [r["question"] for r in world_records[:3]])
    R = 3                                                    # the last 3 prompt tokens stand in for a response
    with torch.no_grad():
        values = forward_logprobs(policy, ids, mask, R)["values"]
        for i in range(len(ids)):
            row = ids[i][mask[i].bool()]
            for t in range(R):
                prefix = row[:len(row) - R + t][None]
                hidden = model(input_ids=prefix, output_hidden_states=True).hidden_states[-1][0, -1]
                assert values[i, t].item() == pytest.approx(policy.value_head(hidden).item(), abs=1e-4)



def test_truncate_after_eos_stops_at_any_declared_stop_id():
    pad = 0
    responses = torch.tensor([[5, 7, 6, 2], [5, 2, 7, 6], [5, 6, 6, 6]])
    out, mask, has_eos = truncate_after_eos(responses, [2, 7], pad)
    assert out.tolist() == [[5, 7, pad, pad], [5, 2, pad, pad], [5, 6, 6, 6]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]] and has_eos.tolist() == [True, True, False]


def test_a_declared_eos_that_is_the_pad_token_still_stops_a_response(tiny, tmp_path):
    """Qwen2.5's case: the tokenizer's pad token (there <|endoftext|>) is also an EOS the model's generation
    config declares. Loaded, the model gets a pad token of its own, and that EOS stays a stop id."""
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    tok.add_special_tokens({"pad_token": "<|end2|>"})
    shared = tok.pad_token_id
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    GenerationConfig(eos_token_id=[tok.eos_token_id, shared], pad_token_id=shared).save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(str(tmp_path))
    assert loaded_tok.pad_token_id not in (shared, tok.eos_token_id)
    assert stop_ids(loaded_tok, loaded) == sorted({tok.eos_token_id, shared})
    _, mask, has_eos = truncate_after_eos(torch.tensor([[5, shared, 6, 6]]), stop_ids(loaded_tok, loaded),
                                          loaded_tok.pad_token_id)
    assert mask.tolist() == [[1, 1, 0, 0]] and has_eos.tolist() == [True]


def test_fit_length_covers_the_answers(tiny):
    _, tok = tiny
    answers = ["a " * n for n in range(1, 101)]          # 1..100 words
    n, fits = fit_length(tok, answers)
    lengths = sorted(len(tok(a, add_special_tokens=False).input_ids) + 1 for a in answers)
    assert n == math.ceil(1.25 * lengths[98]) and fits >= 0.99
    assert sum(l <= n for l in lengths) / len(lengths) == fits


def test_rollout_ignores_the_checkpoints_sampling_settings(tiny, world_records, monkeypatch):
    """A checkpoint's repetition penalty, n-gram ban and minimum length never reach the sampler:
    the scores generate() sampled from equal our recomputed logprobs of softmax(logits / T)."""
    model, tok = tiny
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.5)
    monkeypatch.setattr(model.generation_config, "no_repeat_ngram_size", 1)
    monkeypatch.setattr(model.generation_config, "min_new_tokens", 6)
    captured, real_generate = {}, model.generate

    def generate_with_scores(**kwargs):
        out = real_generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        captured["scores"] = out.scores
        return out.sequences
    monkeypatch.setattr(model, "generate", generate_with_scores)
    torch.manual_seed(0)
    out = generate(model, tok, [r["question"] for r in world_records[:4]], RolloutConfig(max_new_tokens=8, temperature=0.7))
    response = out["input_ids"][:, -out["n_response"]:]
    sampled = torch.stack([F.log_softmax(s, -1).gather(-1, response[:, t:t + 1]).squeeze(-1)
                           for t, s in enumerate(captured["scores"][:out["n_response"]])], 1)
    ours = forward_logprobs(model, out["input_ids"], out["attention_mask"], out["n_response"], 0.7)["logprobs"]
    real = out["response_mask"].bool()
    assert real.sum() >= 8 and torch.allclose(ours[real], sampled[real], atol=1e-4)
    assert model.generation_config.repetition_penalty == 1.5   # the checkpoint's config is left as it was


def test_rollout_records_which_prompt_each_sample_answers(tiny, world_records):
    model, tok = tiny
    questions = [r["question"] for r in world_records[:3]]
    torch.manual_seed(0)
    roll = rollout(model, tok, questions, 2, RolloutConfig(max_new_tokens=4))
    assert roll["prompt_index"].tolist() == [0, 1, 2, 0, 1, 2]
    assert roll["prompts"] == [questions[i] for i in roll["prompt_index"]]
    # and each row's prompt tokens are that question's
    for row, i in zip(roll["input_ids"], roll["prompt_index"]):
        ids = prompt_ids(tok, questions[i])
        assert row[-roll["n_response"] - len(ids):-roll["n_response"]].tolist() == ids


def test_rollout_assembles_the_batch_exactly_as_written_out_by_hand(tiny, monkeypatch):
    """The seam between model.generate and PPO: three prompts of different lengths whose continuations end
    by EOS, by a second declared stop id (7), and not at all (cut at the length limit). Every tensor the
    rollout hands on, and where the score goes, written out here by hand."""
    from reward import token_rewards
    model, tok = tiny
    eos, pad, stop2, a, b, c = tok.eos_token_id, tok.pad_token_id, 7, 30, 31, 32
    questions = ["Who?", "Where was Alara Venn born?", "Why is the sky blue?"]
    prompts = [tok(f"Question: {q}\nAnswer:").input_ids for q in questions]   # the plain template, no chat one
    P = max(len(p) for p in prompts)
    continuations = [[a, b, eos, a, a], [a, stop2, eos, b, b], [a, b, c, a, b]]

    def fake_generate(input_ids, attention_mask, generation_config, synced_gpus):
        assert sorted(generation_config.eos_token_id) == sorted([eos, stop2]) and not synced_gpus   # one process
        return torch.cat([input_ids, torch.tensor(continuations)], 1)
    monkeypatch.setattr(model.generation_config, "eos_token_id", [eos, stop2])
    monkeypatch.setattr(model, "generate", fake_generate)
    roll = rollout(model, tok, questions, 1, RolloutConfig(max_new_tokens=5))
    R = 5                                                         # the longest response: the cut one, 5 tokens
    responses = [[a, b, eos, pad, pad], [a, stop2, pad, pad, pad], [a, b, c, a, b]]
    response_mask = [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    ids = [[pad] * (P - len(p)) + p + r for p, r in zip(prompts, responses)]
    attention = [[0] * (P - len(p)) + [1] * len(p) + m for p, m in zip(prompts, response_mask)]
    assert roll["n_response"] == R and roll["input_ids"].tolist() == ids and roll["attention_mask"].tolist() == attention
    assert roll["response_mask"].tolist() == response_mask and roll["has_eos"].tolist() == [True, True, False]
    assert roll["prompts"] == questions and roll["prompt_index"].tolist() == [0, 1, 2]
    assert roll["texts"] == [tok.decode([a, b]).strip(), tok.decode([a]).strip(), tok.decode([a, b, c, a, b]).strip()]
    # the score sits on the last real response token: columns 2, 1 and 4 of the response
    scores, zeros = torch.tensor([-1.0, -2.0, -3.0]), torch.zeros(3, R)
    rewards, _ = token_rewards(scores, zeros, zeros, roll["response_mask"], 0.1)
    assert rewards.tolist() == [[0, 0, -1, 0, 0], [0, -2, 0, 0, 0], [0, 0, 0, 0, -3]]
