"""helpers/models.py: precision (float32 masters under bf16), pad tokens, the prompt templates against
open-unlearning's construction on real tokenizers, and every log-probability against the Hugging
Face loss."""
import copy
import os

import pytest
import torch
from transformers import AutoTokenizer

from conftest import TOFU, tokenizer_path
from helpers.cli import DareuError
from helpers.lora import LoraConfig
from helpers.models import (answer_logprobs, autocast, compute_dtype, ensure_pad_token, forward_logprobs,
                            frozen_reference, load_model, position_ids_from_mask, save_model, trainable_model,
                            write_model)
from helpers.prompts import PROMPT_TEMPLATES, encode_qa, prompt_ids, qa_ids, set_template, template_of
from helpers.records import read_json_records
from ppo import retain_distillation
from rollout import PolicyWithValue

# ----------------------------------------------------------------------------------------------
# 1. Precision and loading


def test_compute_dtype_and_float32_masters(tmp_path, tiny):
    assert compute_dtype("auto", "cpu", train=True) == torch.float32
    assert compute_dtype("bfloat16", "cpu", train=True) == torch.bfloat16
    assert compute_dtype("float16", "cpu", train=False) == torch.float16
    with pytest.raises(DareuError, match="loss scaling"):
        compute_dtype("float16", "cpu", train=True)
    model, tok = tiny
    save_model(model, tok, str(tmp_path / "m"))
    trained, _ = load_model(str(tmp_path / "m"), "cpu", torch.bfloat16, masters=True)
    frozen, _ = load_model(str(tmp_path / "m"), "cpu", torch.bfloat16)
    assert {p.dtype for p in trained.parameters()} == {torch.float32}
    assert {p.dtype for p in frozen.parameters()} == {torch.bfloat16}


def test_a_training_step_inside_autocast_reaches_the_next_forward():
    """The stages train inside one autocast context: its forward must see the weights the optimizer
    just changed (torch's autocast cache would keep serving the bf16 copy of the old ones)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=10.0)
    x = torch.ones(1, 4)
    outputs = []
    with autocast("cpu", torch.bfloat16):
        for _ in range(3):
            out = layer(x)
            outputs.append(out.item())
            optimizer.zero_grad()
            out.sum().backward()
            optimizer.step()
    assert outputs[0] != outputs[1] != outputs[2]


@pytest.mark.parametrize("name", ["gpt2", "tinyllama-1.1b-chat-v1.0", "phi-3-mini-4k-instruct"])
def test_ensure_pad_token_makes_pad_distinct_from_eos(name):
    path = tokenizer_path(name)
    tok = AutoTokenizer.from_pretrained(path)
    ensure_pad_token(tok)
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"


# ----------------------------------------------------------------------------------------------
# 2. Prompts


def test_encode_qa_marks_exactly_the_answer_tokens(tiny, world_records):
    _, tok = tiny
    recs = world_records[:3]
    ids, mask, answer_mask = encode_qa(tok, [r["question"] for r in recs], [r["answer"] for r in recs])
    for i, r in enumerate(recs):
        answer = ids[i][answer_mask[i].bool()].tolist()
        assert answer[-1] == tok.eos_token_id
        assert tok.decode(answer[:-1]).strip() == r["answer"]
        assert (answer_mask[i] <= mask[i]).all()


@pytest.mark.parametrize("name", ["qwen2.5-instruct", "tinyllama-1.1b-chat-v1.0"])
def test_prompts_use_the_chat_template(name):
    path = tokenizer_path(name)
    tok = AutoTokenizer.from_pretrained(path)
    ids = prompt_ids(tok, "Who wrote it?")
    expected = tok.apply_chat_template([{"role": "user", "content": "Who wrote it?"}], add_generation_prompt=True,
                                       tokenize=False)
    assert tok.decode(ids) == expected


def open_unlearning_item(tok, template, question, answer):
    """open-unlearning's TOFU instance (src/data/utils.py, preprocess_chat_instance), restated:
    input_ids = the whole conversation tokenized at once, labels = -100 over the prompt's length.
    One departure, ours: Qwen3's thinking is off (open-unlearning has no Qwen3 configuration)."""
    t = PROMPT_TEMPLATES[template]
    if template == "ou-chat":
        chat = [{"role": "system", "content": t["system"]}, {"role": "user", "content": question},
                {"role": "assistant", "content": answer}]
        kwargs = dict(tokenize=True, return_dict=False, date_string=t["date_string"], enable_thinking=False)
        full = list(tok.apply_chat_template(chat, **kwargs))
        prompt = list(tok.apply_chat_template(chat[:-1], add_generation_prompt=True, **kwargs))
    else:
        wrapped = t["user_start"] + question + t["user_end"] + t["asst_start"]
        full, prompt = tok(wrapped + answer, add_special_tokens=True).input_ids, tok(wrapped, add_special_tokens=True).input_ids
    if full[-1] != tok.eos_token_id:
        full = full + [tok.eos_token_id]
    return full, [-100] * len(prompt) + full[len(prompt):]


@pytest.mark.parametrize("name", ["tinyllama-1.1b-chat-v1.0", "qwen2.5-instruct", "qwen3", "phi-3-mini-4k-instruct", "gpt2"])
def test_templates_build_open_unlearnings_token_ids(name):
    """Our teacher-forcing batch (encode_qa) holds exactly open-unlearning's input_ids, with the
    answer mask on exactly its labelled tokens, for every template, on a TOFU example."""
    path = tokenizer_path(name)
    rows = read_json_records(os.path.join(TOFU, "forget01.json"))[:2] if os.path.isdir(TOFU) else \
        [{"question": "Who is this celebrated LGBTQ+ author?", "answer": "The author is Jaime Vasquez."}] * 2
    tok = AutoTokenizer.from_pretrained(path)
    ensure_pad_token(tok)
    for template in PROMPT_TEMPLATES:
        if template == "chat" or (template == "ou-chat" and not tok.chat_template):
            continue
        set_template(tok, template)
        ids, mask, answer_mask = encode_qa(tok, [r["question"] for r in rows], [r["answer"] for r in rows])
        for i, r in enumerate(rows):
            full, labels = open_unlearning_item(tok, template, r["question"], r["answer"])
            real = mask[i].bool()
            assert ids[i][real].tolist() == full
            assert [t if m else -100 for t, m in zip(full, answer_mask[i][real].tolist())] == labels


def test_template_details_that_matter_for_released_checkpoints():
    llama, qwen3 = tokenizer_path("tinyllama-1.1b-chat-v1.0"), tokenizer_path("qwen3")
    tok = AutoTokenizer.from_pretrained(llama)
    set_template(tok, "ou-llama2")
    ids, n_prompt = qa_ids(tok, "Who wrote it?", "The author did.")
    assert tok.decode(ids[:n_prompt]) == "<s> [INST] Who wrote it? [/INST]"
    assert tok.convert_ids_to_tokens(ids[n_prompt]) == "The"            # not "▁The": tokenized together
    assert ids[-1] == tok.eos_token_id
    tok = AutoTokenizer.from_pretrained(qwen3)
    chat = tok.decode(prompt_ids(tok, "Who wrote it?"))                  # the default: the model's template
    assert chat.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")   # thinking off
    set_template(tok, "ou-chat")
    text = tok.decode(prompt_ids(tok, "Who wrote it?"))
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    with pytest.raises(DareuError, match="unknown template"):
        set_template(tok, "llama3")


def test_chat_prompts_pin_the_date(tiny, tmp_path):
    """A chat template that prints today's date when none is given (Llama-3.x's) gets the pinned one, in
    every prompt the stages build, on any day; the outputs can record it (template_date)."""
    import time

    from helpers.prompts import chat_text, template_date
    _, tok = tiny
    tok.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    tok.chat_template = ("Today is {{ date_string if date_string is defined else strftime_now('%d %b %Y') }}."
                         "{% for m in messages %} {{ m['content'] }}{% endfor %}")
    today = time.strftime("%d %b %Y")
    for text in (tok.decode(prompt_ids(tok, "Where was Alara Venn born?")),
                 chat_text(tok, [{"role": "user", "content": "x"}], add_generation_prompt=True)):
        assert text.startswith("Today is 26 Jul 2024.") and today not in text
    assert template_date(tok) == "26 Jul 2024"


def test_the_template_is_saved_with_the_tokenizer(tmp_path):
    tok = AutoTokenizer.from_pretrained(tokenizer_path("gpt2"))
    assert template_of(tok) == "chat"
    set_template(tok, "ou-qa")
    tok.save_pretrained(tmp_path)
    assert template_of(AutoTokenizer.from_pretrained(tmp_path)) == "ou-qa"


# ----------------------------------------------------------------------------------------------
# 3. Log-probabilities


def test_position_ids_are_exclusive_cumsum():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_logprobs_match_hf_loss_on_left_padded_batch(tiny, world_records):
    model, tok = tiny
    recs = world_records[:5]
    ids, mask, answer_mask = encode_qa(tok, [r["question"] for r in recs], [r["answer"] for r in recs])
    assert (mask[:, 0] == 0).any(), "the batch must really be left-padded"
    T = ids.shape[1]
    logprobs = forward_logprobs(model, ids, mask, T - 1)["logprobs"]
    for i in range(len(recs)):
        real = mask[i].bool()
        row, labels = ids[i, real][None], ids[i, real][None].clone()
        labels[0, ~answer_mask[i, real].bool()] = -100          # HF: loss on answer tokens only
        hf_loss = model(input_ids=row, labels=labels).loss     # unpadded, HF's own shift and mean
        ours = -(logprobs[i] * answer_mask[i, 1:]).sum() / answer_mask[i, 1:].sum()
        assert torch.allclose(ours, hf_loss, atol=1e-5), (i, ours.item(), hf_loss.item())


def test_answer_logprobs_equal_the_hf_loss_per_row(tiny, world_records):
    """The baselines' teacher-forced ℓ(y|x) and |y| on a left-padded batch, against the Hugging Face
    loss of each row alone (its own shift, answer tokens only) and the answer's token count."""
    model, tok = tiny
    records = [world_records[0], {**world_records[1], "answer": "Yes."}, world_records[2]]
    with torch.no_grad():
        logp, n = answer_logprobs(model, tok, records)
    ids, mask, answer_mask = encode_qa(tok, [r["question"] for r in records], [r["answer"] for r in records])
    assert (mask == 0).any()
    for i, r in enumerate(records):
        row = ids[i][mask[i].bool()][None]
        labels = row.masked_fill(answer_mask[i][mask[i].bool()][None] == 0, -100)
        full, n_prompt = qa_ids(tok, r["question"], r["answer"])
        assert n[i].item() == len(full) - n_prompt                         # answer tokens, EOS included
        with torch.no_grad():
            hf_mean_nll = model(input_ids=row, labels=labels).loss.item()
        assert logp[i].item() == pytest.approx(-hf_mean_nll * n[i].item(), rel=1e-5)


def test_chunked_logprobs_entropy_and_gradients_equal_one_whole_log_softmax(tiny, world_records, monkeypatch):
    """forward_logprobs in chunks of 5 positions (checkpointed, recomputed in backward) against one
    float32 log-softmax over every position: the same logprobs, entropy and gradients."""
    from helpers import models
    model, tok = tiny
    ids, mask, _ = encode_qa(tok, [r["question"] for r in world_records[:4]], [r["answer"] for r in world_records[:4]])
    R, T = 9, 0.7
    whole = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[:, -R - 1:-1]
    logp_all = torch.log_softmax(whole.float() / T, -1)
    expected = logp_all.gather(-1, ids[:, -R:, None]).squeeze(-1)
    expected_entropy = -(logp_all.exp() * logp_all).sum(-1)
    expected.sum().backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    monkeypatch.setattr(models, "LOGPROB_CHUNK", 5)              # 5 // R = 0 -> one row (R positions) a chunk
    out = forward_logprobs(model, ids, mask, R, T, with_entropy=True)
    assert torch.allclose(out["logprobs"], expected, atol=1e-5)
    assert torch.allclose(out["entropy"], expected_entropy, atol=1e-5) and not out["entropy"].requires_grad
    out["logprobs"].sum().backward()
    assert all(torch.allclose(p.grad, g, atol=1e-5) for p, g in zip(model.parameters(), expected_grads))
    model.zero_grad()
    # micro-batches without gradients give the same numbers
    with torch.no_grad():
        batched = forward_logprobs(model, ids, mask, R, T, batch_size=3)
    assert torch.allclose(batched["logprobs"], expected, atol=1e-5)



def test_padding_columns_never_enter_the_forward_and_change_nothing(tiny, world_records):
    """A batch of prompts and responses of different lengths, padded left and right, with two extra columns
    of padding on each side: the model sees only the columns some row uses (and, in micro-batches, each
    micro-batch only its own rows' columns: rows grouped by response length), and every log-prob, value
    and entropy equals the same row's, scored alone without padding."""
    model, tok = tiny
    policy = PolicyWithValue(model)
    torch.nn.init.normal_(policy.value_head.weight, std=0.1)   # values that are not 0, so that they are compared
    prompts = [prompt_ids(tok, r["question"]) for r in world_records[:4]]
    responses = [tok(r["answer"], add_special_tokens=False).input_ids[:n] for r, n in zip(world_records[4:8], (3, 9, 4, 8))]
    P, R, pad = max(map(len, prompts)) + 2, max(map(len, responses)) + 2, tok.pad_token_id
    ids = torch.full((4, P + R), pad)
    mask = torch.zeros_like(ids)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, P - len(p):P], ids[i, P:P + len(r)] = torch.tensor(p), torch.tensor(r)
        mask[i, P - len(p):P + len(r)] = 1
    widths = []
    forward = policy.lm.forward
    policy.lm.forward = lambda *a, **k: widths.append(k["input_ids"].shape[1]) or forward(*a, **k)
    with torch.no_grad():
        whole = forward_logprobs(policy, ids, mask, R, 0.7, with_entropy=True)
        assert widths == [max(map(len, prompts)) + 9]   # the longest prompt and the longest response, no more
        widths.clear()
        batched = forward_logprobs(policy, ids, mask, R, 0.7, with_entropy=True, batch_size=2)
        assert sorted(widths) == sorted([max(len(prompts[0]), len(prompts[2])) + 4,    # responses of 3 and 4 tokens
                                         max(len(prompts[1]), len(prompts[3])) + 9])   # of 9 and 8
        policy.lm.forward = forward
        for i, (p, r) in enumerate(zip(prompts, responses)):
            row = torch.tensor([p + r])
            alone = forward_logprobs(policy, row, torch.ones_like(row), len(r), 0.7, with_entropy=True)
            for out in (whole, batched):
                for key in ("logprobs", "values", "entropy"):
                    assert torch.allclose(out[key][i, :len(r)], alone[key][0], atol=1e-5), (i, key)

# ----------------------------------------------------------------------------------------------
# 5. The folder written is the model trained, and the reference is the original exactly

def trained_then_written(tiny, tmp_path, dtype, lora=None):
    """A model trained as the stages train it (trainable_model in `dtype`, `lora` a LoraConfig or None),
    its weights moved as a small update would move them, then written with write_model. Returns (the
    in-memory model, the folder, the base folder, token ids to score)."""
    model, tok = tiny
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    trained, tok = trainable_model(str(base), "cpu", dtype, lora)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():   # an update of rms ~4e-5 per weight: below half a bf16 step of a weight of size 0.02
        for name, p in trained.named_parameters():
            if p.requires_grad and (lora is None or name.endswith("lora_B")):
                p.add_((4e-5 if lora is None else 3e-4) * torch.randn(p.shape, generator=generator))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    folder = tmp_path / "out"
    return trained, folder, base, ids


def logprobs_of(model, ids, dtype):
    with torch.no_grad(), autocast("cpu", dtype):
        return forward_logprobs(model, ids, torch.ones_like(ids), ids.shape[1] - 1)["logprobs"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_written_full_model_loaded_fresh_is_the_trained_model(tiny, tmp_path, dtype):
    """Full fine-tuning: the float32 masters are written; loaded back held as masters, under the same
    autocast, the folder gives exactly the in-memory model's log-probs."""
    trained, folder, _, ids = trained_then_written(tiny, tmp_path, dtype)
    expected = logprobs_of(trained, ids, dtype)
    write_model(trained, tiny[1], str(folder))
    loaded, _ = load_model(str(folder), "cpu", dtype, masters=True)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert torch.equal(logprobs_of(loaded, ids, dtype), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_lora_keeps_an_update_below_the_bf16_step(tiny, tmp_path, dtype):
    """LoRA merged on save: W + (α/r)·B·A is written in float32, so the folder loaded in float32 computes
    the trained model (to float32 rounding), even where the update is smaller than half a bf16 step of W
    (merged into a bf16 W, most of it was rounded away). Measured against the size of the update itself."""
    trained, folder, base, ids = trained_then_written(tiny, tmp_path, dtype, LoraConfig(rank=4, alpha=4.0))
    exact = copy.deepcopy(trained).float()           # the adapted model computed in float32
    expected, original = logprobs_of(exact, ids, torch.float32), logprobs_of(load_model(str(base))[0], ids, torch.float32)
    update = (expected - original).abs().max()
    write_model(trained, tiny[1], str(folder))
    loaded, _ = load_model(str(folder), "cpu", torch.float32)
    assert not any("lora" in k for k in loaded.state_dict()) and {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert update > 1e-5 and (logprobs_of(loaded, ids, torch.float32) - expected).abs().max() < 0.01 * update


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adapters_alone_load_unmerged_and_compute_the_trained_model_exactly(tiny, tmp_path, dtype):
    """--lora-merge false: the base in the compute dtype plus the float32 adapters, applied unmerged on
    load, give exactly the in-memory model's log-probs under the same autocast."""
    trained, folder, base, ids = trained_then_written(tiny, tmp_path, dtype, LoraConfig(rank=4, merge=False))
    expected = logprobs_of(trained, ids, dtype)
    write_model(trained, tiny[1], str(folder), adapters_of=str(base))
    loaded, _ = load_model(str(folder), "cpu", dtype)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(logprobs_of(loaded, ids, dtype), expected)


@pytest.mark.parametrize("lora", [False, True])
def test_the_reference_is_the_original_exactly_under_bf16_autocast(tiny, tmp_path, world_records, lora):
    """Before any update, the reference computes what the policy computes, in bf16 as in float32: the
    per-token KL of the reward and the retain distillation are exactly 0 at step 0."""
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    policy, tok = trainable_model(str(tmp_path), "cpu", torch.bfloat16, LoraConfig(rank=4) if lora else None)
    ref = frozen_reference(policy)
    ids, mask, _ = encode_qa(tok, [r["question"] for r in world_records[:4]], [r["answer"] for r in world_records[:4]])
    with torch.no_grad(), autocast("cpu", torch.bfloat16):
        kl = forward_logprobs(policy, ids, mask, 8)["logprobs"] - forward_logprobs(ref, ids, mask, 8)["logprobs"]
        retain_kl = retain_distillation(policy, ref, tok, world_records[4:8])
    assert kl.abs().max() == 0 and retain_kl == 0


def test_which_tensors_are_float32_in_each_mode(tiny, tmp_path):
    """The precision of each mode, by listing the parameters of each dtype: full fine-tuning holds every
    weight as a float32 master; LoRA keeps the base in the compute dtype (bf16) and exactly its float32
    adapters train; a frozen load is all bf16, a masters load all float32; the full model's reference is
    a float32 copy without grad, the LoRA model's the same model (adapters off), not a copy; the value
    head is float32 in both modes."""
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    bf16 = torch.bfloat16

    def names(m, dtype=None, grad=None):
        return sorted(n for n, p in m.named_parameters()
                      if dtype in (None, p.dtype) and grad in (None, p.requires_grad))

    full, _ = trainable_model(str(tmp_path), "cpu", bf16)
    every = names(full)
    assert names(full, torch.float32) == names(full, grad=True) == every and len(every) > 10
    lora, _ = trainable_model(str(tmp_path), "cpu", bf16, LoraConfig(rank=4))
    adapters = [n for n in names(lora) if n.endswith((".lora_A", ".lora_B"))]
    assert len(adapters) == 2 * 7 * 2                                   # A and B, 7 targets, 2 layers
    assert names(lora, torch.float32) == names(lora, grad=True) == adapters
    assert names(lora, bf16) == sorted(set(names(lora)) - set(adapters)) and len(names(lora, bf16)) == len(every)
    for masters, dtype in [(False, bf16), (True, torch.float32)]:
        loaded, _ = load_model(str(tmp_path), "cpu", bf16, masters=masters)
        assert names(loaded, dtype) == every, masters
    ref = frozen_reference(full)
    assert ref is not full and names(ref, torch.float32) == every and names(ref, grad=True) == []
    assert not {p.data_ptr() for p in ref.parameters()} & {p.data_ptr() for p in full.parameters()}
    assert frozen_reference(lora).model is lora                         # adapters off, no second copy
    for lm in (full, lora):
        head = PolicyWithValue(lm).value_head
        assert {p.dtype for p in head.parameters()} == {torch.float32}
