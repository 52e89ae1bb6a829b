"""Prompts: how a question (and its answer) becomes token ids, the same way in SFT, rollout, retain
distillation, evaluation and attribution. One template decides it (PROMPT_TEMPLATES, qa_ids); a new
prompt format is one entry there.
"""
import torch

from helpers.cli import DareuError

# Prompt templates. Numbers are comparable only in the format a model was trained on.
#   chat       the model's own chat template, no system prompt, thinking off (Qwen3), the date pinned
#              (Llama-3.x templates otherwise print today's: prompts would change from the day of
#              fine-tuning to the day of unlearning); a tokenizer without one gets the plain
#              "Question: q\nAnswer:" + " a" format. The default.
#   ou-chat    open-unlearning's chat format (Llama-3, Qwen2.5): the chat template with the system
#              prompt "You are a helpful assistant." and a pinned date (never today's).
#   ou-llama2  open-unlearning's Llama-2 TOFU format: plain tags "[INST] q [/INST]", no system prompt.
#   ou-qa      open-unlearning's base-model format: "Question: q\nAnswer: ".
# In the ou-* formats the answer is tokenized together with its prompt, as open-unlearning builds
# its labels (so a Llama-2 answer starts with the token "The", not "▁The"), and EOS is appended
# when the text does not already end with it. The template travels with the tokenizer: it is kept
# in tokenizer_config.json (key dareu_template), so a model fine-tuned in a format keeps it.
PROMPT_TEMPLATES = {
    "chat": {"date_string": "26 Jul 2024"},   # Llama-3.1's template's own date when none is given
    "ou-chat": {"system": "You are a helpful assistant.", "date_string": "10 Apr 2025"},
    "ou-llama2": {"user_start": "[INST] ", "user_end": " [/INST]", "asst_start": ""},
    "ou-qa": {"user_start": "Question: ", "user_end": "\n", "asst_start": "Answer: "},
}


def set_template(tokenizer, name):
    """Use template `name` for every prompt this tokenizer builds (and save it with the tokenizer)."""
    if name not in PROMPT_TEMPLATES:
        raise DareuError(f"unknown template {name!r}; choose from {', '.join(PROMPT_TEMPLATES)}")
    if name == "ou-chat" and not tokenizer.chat_template:
        raise DareuError(f"template {name} needs a tokenizer with a chat template")
    tokenizer.init_kwargs["dareu_template"] = name


def template_of(tokenizer):
    return tokenizer.init_kwargs.get("dareu_template", "chat")


def chat_ids(tokenizer, messages, **kwargs):
    """The chat template's token ids for `messages`, thinking off (Qwen3), the date pinned (date_string:
    the `chat` template's unless given)."""
    kwargs.setdefault("date_string", PROMPT_TEMPLATES["chat"]["date_string"])
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, enable_thinking=False,
                                              **kwargs))


def chat_text(tokenizer, messages, **kwargs):
    """The chat template's text for `messages`, as chat_ids builds it."""
    kwargs.setdefault("date_string", PROMPT_TEMPLATES["chat"]["date_string"])
    return tokenizer.apply_chat_template(messages, tokenize=False, enable_thinking=False, **kwargs)


def template_date(tokenizer):
    """The date the tokenizer's template pins (None for the plain formats)."""
    return PROMPT_TEMPLATES[template_of(tokenizer)].get("date_string") if tokenizer.chat_template else None


def qa_ids(tokenizer, question, answer=None):
    """(ids, n_prompt): the token ids of a question and its answer in the tokenizer's template, and
    how many of them are the prompt; the answer part ends with EOS (the model must learn to stop).
    With no answer, the prompt alone, for generation."""
    name, t = template_of(tokenizer), PROMPT_TEMPLATES[template_of(tokenizer)]
    eos = tokenizer.eos_token_id
    if name == "chat":
        if tokenizer.chat_template:
            prompt = chat_ids(tokenizer, [{"role": "user", "content": question}], add_generation_prompt=True)
            text = answer
        else:
            prompt = tokenizer(f"Question: {question}\nAnswer:").input_ids
            text = None if answer is None else " " + answer
        if answer is None:
            return prompt, len(prompt)
        return prompt + tokenizer(text, add_special_tokens=False).input_ids + [eos], len(prompt)
    # open-unlearning: tokenize the prompt, and the prompt with its answer; the answer is what
    # follows the prompt's length (where the two tokenizations disagree at the border, as they do
    # for "Answer: " + "The", the joint one wins, as in open-unlearning)
    if name == "ou-chat":
        chat = [{"role": "system", "content": t["system"]}, {"role": "user", "content": question}]
        prompt = chat_ids(tokenizer, chat, add_generation_prompt=True, date_string=t["date_string"])
        if answer is None:
            return prompt, len(prompt)
        full = chat_ids(tokenizer, chat + [{"role": "assistant", "content": answer}], date_string=t["date_string"])
    else:
        wrapped = t["user_start"] + question + t["user_end"] + t["asst_start"]
        prompt = tokenizer(wrapped).input_ids
        if answer is None:
            return prompt, len(prompt)
        full = tokenizer(wrapped + answer).input_ids
    return (full if full[-1] == eos else full + [eos]), len(prompt)


def prompt_ids(tokenizer, question):
    """Token ids of the prompt for `question` in the tokenizer's template (see PROMPT_TEMPLATES)."""
    return qa_ids(tokenizer, question)[0]


def left_pad(sequences, pad_id):
    """Left-pad lists of ids into (input_ids, attention_mask) tensors [B, T]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def encode_prompts(tokenizer, questions, max_prompt_tokens=256):
    """Left-padded prompts [B, P] for generation (keeps the last max_prompt_tokens of each)."""
    return left_pad([prompt_ids(tokenizer, q)[-max_prompt_tokens:] for q in questions], tokenizer.pad_token_id)


def encode_qa(tokenizer, questions, answers, max_tokens=512):
    """Left-padded prompt+answer sequences for teacher forcing.
    Returns input_ids, attention_mask and answer_mask [B, T]: answer_mask[t] = 1 where token t is an
    answer token (so it is predicted from position t-1); prompt and pad positions are 0."""
    seqs, n_answer = [], []
    for q, a in zip(questions, answers):
        ids, n_prompt = qa_ids(tokenizer, q, a)
        s = ids[-max_tokens:]
        seqs.append(s)
        n_answer.append(min(len(ids) - n_prompt, len(s) - 1))
    ids, mask = left_pad(seqs, tokenizer.pad_token_id)
    answer_mask = torch.zeros_like(mask)
    for i, n in enumerate(n_answer):
        answer_mask[i, ids.shape[1] - n:] = 1
    return ids, mask, answer_mask
