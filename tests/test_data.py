"""data.py: loading, the TOFU owner mapping, forget resolution, the synthetic world, tokenising."""
import json
import os

import pytest

from cli import DareuError
from conftest import TOFU, TOKENIZERS
from data import load_records, owners_of, read_json_records, resolve_forget, split_records, synthetic_world
from models import encode_qa

needs_tofu = pytest.mark.skipif(not os.path.isfile(os.path.join(TOFU, "full.json")), reason="TOFU data absent")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@needs_tofu
def test_tofu_owner_is_row_index_div_20():
    records = load_records(TOFU)
    assert len(records) == 4000 and len(owners_of(records)) == 200
    assert records[0]["owner"] == "tofu_000" and records[19]["owner"] == "tofu_000"
    assert records[20]["owner"] == "tofu_001" and records[3999]["owner"] == "tofu_199"
    # the repeated question of `full` belongs to two different authors (keyed by index, not text)
    assert records[100]["question"] == records[440]["question"]
    assert (records[100]["owner"], records[440]["owner"]) == ("tofu_005", "tofu_022")


@needs_tofu
@pytest.mark.parametrize("split,n_authors", [("forget01", 2), ("forget05", 10), ("forget10", 20)])
def test_tofu_forget_splits_are_the_last_authors(split, n_authors):
    records = load_records(TOFU)
    owners = resolve_forget(split, records)
    assert owners == [f"tofu_{i:03d}" for i in range(200 - n_authors, 200)]
    forget, retain = split_records(records, owners)
    official = read_jsonl(os.path.join(TOFU, f"{split}.json"))
    assert [(r["question"], r["answer"]) for r in forget] == [(r["question"], r["answer"]) for r in official]
    retain_file = read_jsonl(os.path.join(TOFU, f"retain{100 - int(split[-2:])}.json"))
    assert [r["answer"] for r in retain] == [r["answer"] for r in retain_file]


def test_forget_from_names_and_from_a_file(tmp_path):
    records = synthetic_world(n_owners=4)
    owners = owners_of(records)
    assert resolve_forget(f"{owners[1]}, {owners[3]}", records) == [owners[1], owners[3]]
    path = tmp_path / "forget.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records if r["owner"] == owners[2]))
    assert resolve_forget(str(path), records) == [owners[2]]


def test_bad_forget_specs_raise_one_line_errors():
    records = synthetic_world(n_owners=4)
    owners = owners_of(records)
    with pytest.raises(DareuError, match="valid owners: " + owners[0]):
        resolve_forget("Nobody Atall", records)
    with pytest.raises(DareuError, match="empty"):
        resolve_forget(" , ", records)
    with pytest.raises(DareuError, match="every owner"):
        resolve_forget(",".join(owners), records)


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"owner": "a", "question": "q?", "answer": "a."})
    path.write_text(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(DareuError, match="line 3"):
        load_records(str(path))
    path.write_text(json.dumps({"owner": "a", "question": "q?"}) + "\n")
    with pytest.raises(DareuError, match="record 1"):
        load_records(str(path))
    with pytest.raises(DareuError, match="no such file"):
        load_records(str(tmp_path / "missing.jsonl"))


def test_json_array_and_jsonl_read_alike(tmp_path):
    records = synthetic_world(n_owners=2)
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_records(str(tmp_path / "a.json")) == load_records(str(tmp_path / "b.jsonl")) == records


def test_synthetic_world_has_owner_unique_facts():
    records = synthetic_world(n_owners=8, seed=3)
    owners = owners_of(records)
    assert len(owners) == 8
    for owner in owners:
        own = [r for r in records if r["owner"] == owner]
        assert len(own) >= 10 and len({r["question"] for r in own}) == len(own)
    # every answer of one owner differs from every other owner's answer once names are removed
    stripped = {(r["owner"], r["answer"].replace(r["owner"], "")) for r in records}
    assert len({a for _, a in stripped}) == len(records)
    assert synthetic_world(n_owners=8, seed=3) == records and synthetic_world(n_owners=8, seed=4) != records


def test_encode_qa_marks_exactly_the_answer_tokens(tiny, world_records):
    _, tok = tiny
    recs = world_records[:3]
    ids, mask, answer_mask = encode_qa(tok, [r["question"] for r in recs], [r["answer"] for r in recs])
    for i, r in enumerate(recs):
        answer = ids[i][answer_mask[i].bool()].tolist()
        assert answer[-1] == tok.eos_token_id
        assert tok.decode(answer[:-1]).strip() == r["answer"]
        assert (answer_mask[i] <= mask[i]).all()


def open_unlearning_item(tok, template, question, answer):
    """open-unlearning's TOFU instance (src/data/utils.py, preprocess_chat_instance), restated:
    input_ids = the whole conversation tokenized at once, labels = -100 over the prompt's length.
    One departure, ours: Qwen3's thinking is off (open-unlearning has no Qwen3 configuration)."""
    from models import PROMPT_TEMPLATES
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
    from transformers import AutoTokenizer

    from models import PROMPT_TEMPLATES, ensure_pad_token, set_template
    path = os.path.join(TOKENIZERS, name)
    if not os.path.isdir(path):
        pytest.skip(f"{path} absent")
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
    from transformers import AutoTokenizer

    from models import prompt_ids, qa_ids, set_template
    llama = os.path.join(TOKENIZERS, "tinyllama-1.1b-chat-v1.0")
    qwen3 = os.path.join(TOKENIZERS, "qwen3")
    if not (os.path.isdir(llama) and os.path.isdir(qwen3)):
        pytest.skip("tokenizers absent")
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


def test_the_template_is_saved_with_the_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from models import set_template, template_of
    tok = AutoTokenizer.from_pretrained(os.path.join(TOKENIZERS, "gpt2")) if os.path.isdir(TOKENIZERS) else None
    if tok is None:
        pytest.skip("tokenizers absent")
    assert template_of(tok) == "chat"
    set_template(tok, "ou-qa")
    tok.save_pretrained(tmp_path)
    assert template_of(AutoTokenizer.from_pretrained(tmp_path)) == "ou-qa"
