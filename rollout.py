"""Rollouts: sample responses to prompts, exactly from the distribution PPO then scores (METHOD.md §4).

Most PPO bugs come from log-probabilities that differ between rollout and update. Here both come
from one function, models.forward_logprobs, called with the same
  - left padding and a pad token distinct from EOS (models.ensure_pad_token),
  - position ids = exclusive cumsum of the attention mask (what generate() uses for left padding),
  - temperature (logits / T, the distribution the sample was drawn from),
  - dropout off (model.eval(); PPO's gradient steps also run in eval mode),
and the sampler draws from softmax(logits / T) with nothing of the checkpoint's generation config.
The value head (PolicyWithValue) sits here too: it scores the same positions in the same forward.

Shapes: a batch is [B, P + R]: P left-padded prompt columns, then R response columns, right-padded
after the first EOS. Per-token quantities live on the response columns, [B, R].

    python rollout.py --model DIR --prompt "Where was Alara Venn born?" --samples 4
"""
import argparse
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from helpers.distributed import gather, rank_and_size
from helpers.models import forward_logprobs
from helpers.prompts import encode_prompts


@dataclass
class RolloutConfig:
    temperature: float = 1.0          # sampling temperature T; logprobs use logits / T too
    max_new_tokens: int | None = None  # response length limit (no EOS by then: penalised); None: fit the forget answers
    batch_size: int = 64              # prompts per generate() call


def stop_ids(tokenizer, model):
    """Every token id that ends a response: the tokenizer's EOS and each EOS the model declares
    (Llama-3's list, Phi-3's <|end|>, Qwen's <|im_end|> and <|endoftext|>), the pad token among them
    if it is one (models.ensure_pad_token gives a loaded model a pad token that is none of them)."""
    declared = model.generation_config.eos_token_id
    declared = declared if isinstance(declared, (list, tuple)) else [declared]
    return sorted({tokenizer.eos_token_id, *declared} - {None})


def fit_length(tokenizer, answers, coverage=0.99, headroom=1.25):
    """A response length that fits the data: `headroom` × the length (EOS included) that `coverage`
    of the gold answers fit in. Returns (max_new_tokens, fraction of answers that fit in it)."""
    lengths = sorted(len(tokenizer(a, add_special_tokens=False).input_ids) + 1 for a in answers)
    quantile = lengths[max(0, math.ceil(coverage * len(lengths)) - 1)]
    n = math.ceil(headroom * quantile)
    return n, sum(l <= n for l in lengths) / len(lengths)


class PolicyWithValue(nn.Module):
    """A causal LM `lm` plus a float32 value head: V(s_t) = w · h_t + b on the final hidden state,
    zero-initialised so the first value estimates are 0 and do not disturb the first update. Called
    like the LM, it returns {"logits", "values"} (models.forward_logprobs reads both). h is what the LM's
    output layer reads, caught by a hook: the final hidden state at the logits_to_keep positions only,
    not every layer's (output_hidden_states would keep them all)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.get_text_config().hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.value_head.to(device=lm.device, dtype=torch.float32)

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep=0):
        final_hidden = []
        hook = self.lm.get_output_embeddings().register_forward_hook(lambda m, inputs, out: final_hidden.append(inputs[0]))
        try:
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          logits_to_keep=logits_to_keep)
        finally:
            hook.remove()
        return {"logits": out.logits, "values": self.value_head(final_hidden[-1]).squeeze(-1)}


def truncate_after_eos(responses, eos_ids, pad_id):
    """Keep each response up to and including its first stop token (any of `eos_ids`); pad the rest.
    Returns (responses, response_mask [B,R], has_eos [B])."""
    is_eos = torch.isin(responses, torch.as_tensor(eos_ids, device=responses.device))
    # number of EOS tokens strictly before position t; a token is kept while that is 0
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    mask = (eos_before == 0).long()
    return responses.masked_fill(mask == 0, pad_id), mask, is_eos.any(dim=1)


def generation_config(model, tokenizer, cfg, greedy=False):
    """The rollout's GenerationConfig, built from nothing: samples are drawn from softmax(logits / T)
    exactly (top-k 0, top-p 1, no repetition penalty, no n-gram ban, no minimum length), and stop
    at every stop id. generate() fills the fields left unset here from model.generation_config,
    so generate() below runs with that replaced by a blank one: nothing of the checkpoint's applies."""
    from transformers import GenerationConfig
    if cfg.max_new_tokens is None:
        raise ValueError("RolloutConfig.max_new_tokens is None: set it, e.g. from fit_length(tokenizer, answers)")
    sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0)
    return GenerationConfig(max_new_tokens=cfg.max_new_tokens, eos_token_id=stop_ids(tokenizer, model),
                            pad_token_id=tokenizer.pad_token_id, **sampling)


@torch.no_grad()
def generate(model, tokenizer, questions, cfg, greedy=False):
    """Sample (or greedily decode) one response per question, with the KV cache.
    Returns dict(input_ids, attention_mask [B, P+R], response_mask [B, R], has_eos [B], n_response,
    texts). Batches are padded to a common R so they can be stacked."""
    from transformers import GenerationConfig
    rows, gen_cfg = [], generation_config(model, tokenizer, cfg, greedy)
    checkpoint_cfg, model.generation_config = model.generation_config, GenerationConfig()
    try:
        for i in range(0, len(questions), cfg.batch_size):
            prompt, prompt_mask = encode_prompts(tokenizer, questions[i:i + cfg.batch_size])
            prompt, prompt_mask = prompt.to(model.device), prompt_mask.to(model.device)
            # no position_ids: generate() derives them from the attention mask, as forward_logprobs does
            # several processes (FSDP) step together until every one's responses have ended
            out = model.generate(input_ids=prompt, attention_mask=prompt_mask, generation_config=gen_cfg,
                                 synced_gpus=rank_and_size()[1] > 1)
            response, response_mask, has_eos = truncate_after_eos(out[:, prompt.shape[1]:], gen_cfg.eos_token_id,
                                                                  tokenizer.pad_token_id)
            rows += [(prompt[j], prompt_mask[j], response[j], response_mask[j], has_eos[j]) for j in range(len(prompt))]
    finally:
        model.generation_config = checkpoint_cfg
    P = max(r[0].shape[0] for r in rows)
    R = max(int(r[3].sum()) for r in rows)
    ids = torch.full((len(rows), P + R), tokenizer.pad_token_id, dtype=torch.long, device=model.device)
    mask = torch.zeros_like(ids)
    for j, (p, pm, r, rm, _) in enumerate(rows):
        ids[j, P - p.shape[0]:P], mask[j, P - p.shape[0]:P] = p, pm
        n = min(R, r.shape[0])
        ids[j, P:P + n], mask[j, P:P + n] = r[:n], rm[:n]
    response_mask, has_eos = mask[:, P:], torch.stack([r[4] for r in rows])
    # the text is what the response says: its tokens before the stop token (which need not be special)
    said = torch.arange(R, device=ids.device) < (response_mask.sum(-1) - has_eos.long())[:, None]
    texts = [tokenizer.decode(ids[j, P:][said[j]], skip_special_tokens=True).strip() for j in range(len(rows))]
    return {"input_ids": ids, "attention_mask": mask, "response_mask": response_mask, "n_response": R,
            "has_eos": has_eos, "texts": texts}


def check_fit(model, tokenizer, questions, cfg, batch_size):
    """Before PPO: the share of the model's greedy answers to `questions` that end within cfg's length (the
    rest would earn the missing-EOS penalty whatever they say), printed with a warning under 90 %."""
    greedy = generate(model, tokenizer, questions, RolloutConfig(max_new_tokens=cfg.max_new_tokens,
                                                                  batch_size=batch_size), greedy=True)
    fits = greedy["has_eos"].float().mean().item()
    print(f"{fits:.0%} of the original's greedy forget answers end within the rollout length ({cfg.max_new_tokens} "
          "tokens)" + ("" if fits >= 0.9 else "; warning: the rest earn the missing-EOS penalty, whatever they say: "
                                              "raise --max-new-tokens"))
    return fits


def rollout(model, tokenizer, questions, samples_per_prompt, cfg):
    """`samples_per_prompt` sampled responses to each question: generate()'s batch plus "prompts"
    (the question of each sample) and "prompt_index" [B] (which of `questions` it answers; samples of
    one question form a group, as group advantages need)."""
    prompts = questions * samples_per_prompt
    roll = generate(model, tokenizer, prompts, cfg)
    roll.update(prompts=prompts, prompt_index=torch.arange(len(questions)).repeat(samples_per_prompt))
    return roll


def whole_batch(roll, pad_id, per_token, per_response):
    """Under several processes, each of which sampled and scored its share of the prompts: the whole batch
    on every process, in rank order: the rollouts' [b, P + R] rows re-padded to the widest prompt and
    response, the `per_token` tensors [b, R] (log-probs, rewards, …) right-padded with 0, the
    `per_response` tensors [b] joined, prompt_index offset so that groups stay apart. With one process,
    everything as it is. Returns (roll, per_token, per_response), on the device they came from."""
    def cpu(d):   # (and without the entries that are None)
        return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in d.items() if v is not None}
    parts = gather((cpu(roll), cpu(per_token), cpu(per_response)))
    if len(parts) == 1:
        return roll, per_token, per_response
    device = roll["input_ids"].device
    P = max(r["input_ids"].shape[1] - r["n_response"] for r, _, _ in parts)
    R = max(r["n_response"] for r, _, _ in parts)

    def joined(key, value, prompt_side=True):   # left-pad the prompt side (when there is one), right-pad the rest
        return torch.cat([nn.functional.pad(x[key], ((P + r["n_response"] - r["input_ids"].shape[1]) * prompt_side,
                                                     R - r["n_response"]), value=value)
                          for x, r in ((r if prompt_side else t, r) for r, t, _ in parts)]).to(device)
    out = {"n_response": R, "input_ids": joined("input_ids", pad_id), "attention_mask": joined("attention_mask", 0),
           "prompts": [p for r, _, _ in parts for p in r["prompts"]], "texts": [t for r, _, _ in parts for t in r["texts"]],
           "has_eos": torch.cat([r["has_eos"] for r, _, _ in parts]).to(device)}
    out["response_mask"] = out["attention_mask"][:, P:]
    offsets = torch.tensor([0] + [int(r["prompt_index"].max()) + 1 for r, _, _ in parts[:-1]]).cumsum(0)
    out["prompt_index"] = torch.cat([r["prompt_index"] + o for (r, _, _), o in zip(parts, offsets)])
    return (out, {k: joined(k, 0.0, prompt_side=False) for k in parts[0][1]},
            {k: torch.cat([v[k] for _, _, v in parts]).to(device) for k in per_response})


# ----------------------------------------------------------------------------------------------
# The command line: what each flag accepts, checked where the flags are parsed (helpers/cli.py)

ROLLOUT_CHECKS = dict(temperature="> 0", max_new_tokens=">= 1", batch_size=">= 1")


def main():
    from helpers.cli import HelpFormatter, add_config_args, config_from_args
    from helpers.models import add_model_args, autocast, compute_dtype, load_model
    p = argparse.ArgumentParser(description="Sample responses from a model, as a PPO rollout does.",
                                formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face model folder")
    p.add_argument("--prompt", required=True, help="the question to answer")
    p.add_argument("--samples", type=int, default=4, help="responses to sample")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    add_model_args(p)
    add_config_args(p, RolloutConfig, title="sampling")
    args = p.parse_args()
    cfg = config_from_args(RolloutConfig, args, ROLLOUT_CHECKS)
    cfg.max_new_tokens = cfg.max_new_tokens or 64   # no data to fit the length to
    dtype = compute_dtype(args.dtype, args.device, train=False)
    model, tokenizer = load_model(args.model, args.device, dtype, template=args.template)
    with autocast(args.device, dtype):
        out = generate(model, tokenizer, [args.prompt] * args.samples, cfg, greedy=args.greedy)
        lp = forward_logprobs(model, out["input_ids"], out["attention_mask"], out["n_response"], cfg.temperature)
    for text, ids, l, m, e in zip(out["texts"], out["input_ids"][:, -out["n_response"]:], lp["logprobs"],
                                  out["response_mask"], out["has_eos"]):
        end = f"ended by {tokenizer.convert_ids_to_tokens(int(ids[m.bool()][-1]))}" if e else "no stop token"
        print(f"[logp {float((l * m).sum()):8.2f}, {int(m.sum())} tokens, {end}] {text}")


if __name__ == "__main__":
    from helpers.cli import run_cli
    run_cli(main)
