"""Models and tokens: what every stage does with a Hugging Face causal LM and its tokenizer.

  1. precision: the compute dtype (bf16 autocast on CUDA), float32 master weights when training,
  2. loading and saving: safetensors only, no remote code, a pad token distinct from EOS, outputs
     written whole; a from-scratch BPE tokenizer and tiny Llama for CPU runs,
  3. memory and time on one GPU: LoRA (lora.py) with the reference as the same weights, adapters off,
     gradient checkpointing, and the clock behind each phase's seconds (PhaseTimer),
  4. log-probabilities: `forward_logprobs`, the one function that scores tokens, for the rollout and
     the PPO update alike (and so for every NLL in finetune.py and evaluate.py); logits only where
     they are needed, and the float32 log-softmax over the vocabulary in chunks, never whole.
Prompts (questions and answers to token ids) are in prompts.py.
"""
import copy
import json
import os
import shutil
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from helpers.cli import DareuError, add_config_args, check_device, publish, staging_dir
from helpers.lora import AdaptersOff, LoraConfig, add_lora, load_adapters, lora_layers, merge_lora, save_adapters
from helpers.prompts import PROMPT_TEMPLATES, encode_qa, set_template

LOGPROB_CHUNK = 1024   # positions per float32 [chunk, vocabulary] block of a log-softmax

# ----------------------------------------------------------------------------------------------
# 1. Precision

DTYPES = ("auto", "float32", "bfloat16", "float16")


def compute_dtype(name, device, train):
    """The dtype forward passes run in. auto: bfloat16 on CUDA, float32 on the CPU.
    Training never updates low-precision weights in place (at lr 1e-6 AdamW moves ~2 % of bf16
    weights; in fp16 zero-gradient rows turn NaN): trainable weights and AdamW's state stay float32
    and only the forward runs in bf16 (`autocast`). fp16 would need loss scaling: refused."""
    if name not in DTYPES:
        raise DareuError(f"unknown --dtype {name!r}; choose from {', '.join(DTYPES)}")
    if name == "auto":
        name = "bfloat16" if device.startswith("cuda") else "float32"
    if name == "bfloat16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise DareuError("--dtype bfloat16: this GPU has no bfloat16; use --dtype float32")
    if name == "float16" and train:
        raise DareuError("--dtype float16 cannot train without loss scaling, which dareu does not do; "
                         "use --dtype bfloat16 (or float32)")
    return getattr(torch, name)


def autocast(device, dtype):
    """Run forward passes in `dtype` (weights stay as they are); a no-op for float32. Without autocast's
    weight cache: it keeps the low-precision copy of each float32 weight for the life of the context,
    and the stages train inside one context, so after an optimizer step the forward would still use
    the copy of the old weights (and the cache holds a second copy of every weight)."""
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32,
                          cache_enabled=False)


def add_model_args(parser, template=True):
    """--device, --dtype and (for stages that build prompts) --template, the same on every stage."""
    group = parser.add_argument_group("device and precision")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                       help="torch device: cpu, cuda, cuda:N or mps")
    group.add_argument("--dtype", default="auto", choices=DTYPES,
                       help="compute dtype of the forward passes; trained weights and AdamW stay float32 "
                            "(auto: bfloat16 on CUDA, float32 on CPU)")
    if template:
        group.add_argument("--template", choices=list(PROMPT_TEMPLATES),
                           help="prompt template (default: the one saved with the tokenizer, else chat); see "
                                "PROMPT_TEMPLATES in prompts.py")
    return group


# ----------------------------------------------------------------------------------------------
# 2. Loading and saving

def check_model_folder(path):
    """Cheap checks of a Hugging Face model folder, before any work: config.json parses and names a
    model type, and every safetensors file is whole (its header's tensors end where the file ends)."""
    if not os.path.isdir(path):
        raise DareuError(f"no such model folder: {path}")
    if adapters_base(path):
        return check_model_folder(adapters_base(path))
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise DareuError(f"cannot load a model from {path}: no config.json (not a Hugging Face model folder)")
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise DareuError(f"cannot load a model from {path}: config.json: {str(e).splitlines()[0]}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise DareuError(f"cannot load a model from {path}: config.json names no model_type")
    for name in sorted(n for n in os.listdir(path) if n.endswith(".safetensors")):
        file, size = os.path.join(path, name), os.path.getsize(os.path.join(path, name))
        with open(file, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            try:
                header = json.loads(f.read(n)) if 8 + n <= size else None
                end = 8 + n + max([t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"] or [0])
            except (ValueError, TypeError, KeyError, AttributeError):
                end = None
        if end != size:
            raise DareuError(f"cannot load a model from {path}: {name} is truncated or corrupt "
                             f"({size} bytes{f', its header says {end}' if end else ''})")


def adapters_base(path):
    """The base model folder of a folder that holds LoRA adapters alone (lora.json), else None."""
    meta = os.path.join(path, "lora.json")
    if not os.path.isfile(meta):
        return None
    with open(meta, encoding="utf-8") as f:
        return json.load(f)["base"]


def load_model(path, device="cpu", dtype=torch.float32, masters=False, template=None):
    """A Hugging Face causal LM and its tokenizer from a folder (safetensors, no remote code),
    with a distinct pad token and left padding, in eval mode (dropout off). With `masters` the weights
    are held in float32 whatever `dtype` (the compute dtype, under `autocast`): a model to train, or a
    frozen one that must run exactly as a trained one does; otherwise in `dtype`.
    A folder of LoRA adapters alone (lora.json) loads as its base model with the adapters applied,
    unmerged (trainable_model merges them before training).
    `template` sets the prompt template (PROMPT_TEMPLATES); by default the one saved with the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    check_model_folder(path)
    check_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(adapters_base(path) or path, dtype=torch.float32 if masters else dtype)
    except (OSError, ValueError, KeyError) as e:
        raise DareuError(f"cannot load a causal LM and tokenizer from {path}: {str(e).splitlines()[0]}") from None
    model = model.to(device).eval()
    ensure_pad_token(tokenizer, model)
    if adapters_base(path):
        load_adapters(model, path)
    if template:
        set_template(tokenizer, template)
    return model, tokenizer


def write_model(model, tokenizer, folder, adapters_of=None):
    """save_pretrained `model` and `tokenizer` into `folder`. A model with LoRA adapters is written
    merged, in float32 (a plain folder; the in-memory model is merged too), or, given `adapters_of` (the
    base model folder), as the adapters alone."""
    if adapters_of and lora_layers(model):
        save_adapters(model, folder, adapters_of, model.lora_config)
    else:
        (merge_lora(model).float() if lora_layers(model) else model).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def save_model(model, tokenizer, out, extra_files=None, adapters_of=None):
    """write_model into a staging folder, then move it to `out` in one rename."""
    stage = staging_dir(out)
    try:
        write_model(model, tokenizer, stage, adapters_of)
        for name, write in (extra_files or {}).items():
            write(f"{stage}/{name}")
        publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def ensure_pad_token(tokenizer, model=None):
    """Give the tokenizer a pad token distinct from every stop token, adding `<|pad|>` (and resizing the
    model's embeddings) when it has none or shares one: a pad that is EOS, or that is a stop token the
    model declares (Qwen2.5: pad <|endoftext|>, which its generation config also lists as an EOS), would
    mask real stop tokens."""
    declared = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stops = {tokenizer.eos_token_id, *(declared if isinstance(declared, (list, tuple)) else [declared])}
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id in stops:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    if model is not None:
        if tokenizer.pad_token_id >= model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "left"


def train_tokenizer(texts, vocab_size=2048):
    """A byte-level BPE tokenizer trained on `texts`, in Hugging Face format. EOS (= BOS) is
    `<|endoftext|>` and pad is a distinct `<|pad|>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|pad|>", padding_side="left")


def tiny_model(tokenizer, n_layer=2, d_model=128, n_head=4, max_positions=512, seed=0):
    """A from-scratch Llama-architecture causal LM sized for a CPU."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=4 * d_model,
                         num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head,
                         max_position_embeddings=max_positions, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


# ----------------------------------------------------------------------------------------------
# 3. Memory on one GPU

def add_memory_args(parser):
    """--lora (and its LoraConfig flags), --gradient-checkpointing and --fsdp, for the stages that train."""
    group = parser.add_argument_group("memory")
    group.add_argument("--lora", action="store_true",
                       help="train LoRA adapters (lora.py) over the frozen model instead of every weight; the "
                            "reference is the same weights with the adapters off")
    group.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute each layer's activations in backward instead of keeping them")
    group.add_argument("--fsdp", action="store_true",
                       help="under torchrun: shard weights, gradients and AdamW state over the processes (FSDP2), "
                            "each sampling and scoring its share of every batch")
    add_config_args(parser, LoraConfig, prefix="lora", title="LoRA (with --lora)")


def trainable_model(path, device, dtype, lora=None, gradient_checkpointing=False, template=None, seed=0):
    """(model, tokenizer) to train. Full fine-tuning: float32 master weights (forwards in `dtype` under
    autocast). `lora` (a LoraConfig): the model frozen in `dtype` with float32 adapters, initialised
    from `seed`. Gradient checkpointing is non-reentrant: the frozen inputs of a layer need no grad.
    A folder of adapters alone is its base with the adapters merged (in float32), then trained."""
    model, tokenizer = load_model(path, device, dtype, masters=lora is None, template=template)
    if lora_layers(model):   # a folder of adapters alone
        merge_lora(model).requires_grad_(True)
    if lora is not None:
        torch.manual_seed(seed)
        add_lora(model, lora)
    if gradient_checkpointing:
        checkpoint_layers(model)
    return model, tokenizer


def checkpoint_layers(model):
    """Gradient checkpointing, non-reentrant (a layer's frozen inputs need no grad): each decoder layer
    keeps only its input and is recomputed in backward (dropout_off keeps it active in eval mode)."""
    if not model.supports_gradient_checkpointing:
        raise DareuError(f"--gradient-checkpointing: {type(model).__name__} does not support it")
    enable = getattr(model, "activation_checkpointing_enable", None)   # its name from transformers 5.2x on
    if enable:
        enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def frozen_reference(model):
    """The original model for the KL terms, computing exactly what `model` computes before its first
    update: with LoRA the same weights with the adapters off (no copy); otherwise a frozen copy of the
    float32 masters, run under the same autocast (a copy in the compute dtype would differ from the
    policy from step 0: its norms, embeddings and residual stream would be rounded too)."""
    if lora_layers(model):
        return AdaptersOff(model)
    return copy.deepcopy(model).eval().requires_grad_(False)


def clock(device):
    """Seconds on a monotonic clock, once the device's queued work is done (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class PhaseTimer:
    """Seconds per phase of one iteration: lap(phase) books the time since the previous lap (once the
    device's queued work is done); `within` moves the parts timed inside that phase to their own names."""

    def __init__(self, device):
        self.device, self.seconds = device, {}
        self.start = self.last = clock(device)

    def lap(self, phase, within=None):
        now = clock(self.device)
        self.seconds[phase] = now - self.last - sum((within or {}).values())
        self.seconds.update(within or {})
        self.last = now

    def rounded(self):
        return {k: round(v, 4) for k, v in self.seconds.items()}


def phase_seconds(metrics_path):
    """Seconds per phase (unlearn.py: rollout, logprobs, scoring, update, retain, greedy_check), summed
    over the "seconds" of each line of metrics.jsonl."""
    totals = {}
    with open(metrics_path, encoding="utf-8") as f:
        for line in f:
            for phase, s in json.loads(line).get("seconds", {}).items():
                totals[phase] = round(totals.get(phase, 0.0) + s, 3)
    return totals


def dropout_off(module):
    """Eval mode (dropout off: sampling and update must be one function, PPO's ratio 1), except the flag
    transformers reads to recompute a checkpointed layer: `training` on that layer alone, its
    submodules (dropout included) staying in eval mode."""
    module.eval()
    for m in module.modules():
        if getattr(m, "gradient_checkpointing", False) is True:
            m.training = True
    return module


# ----------------------------------------------------------------------------------------------
# 4. Log-probabilities

def position_ids_from_mask(attention_mask):
    """Position of each token among the real tokens of its row: exclusive cumsum of the mask
    (0 for the first real token, whatever the left padding); pad positions get 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def chunked(fn, *tensors, rows=None):
    """fn over chunks of `rows` rows (dim 0) of `tensors`, concatenated. With gradients each chunk is
    checkpointed: its float32 blocks over the vocabulary exist only while it is computed (and again in
    backward), so no float32 tensor over every position and the whole vocabulary is ever kept."""
    rows = rows or LOGPROB_CHUNK
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    parts = [checkpoint(fn, *(t[i:i + rows] for t in tensors), use_reentrant=False) if grad else
             fn(*(t[i:i + rows] for t in tensors)) for i in range(0, tensors[0].shape[0], rows)]
    return torch.cat(parts)


def _token_logprobs(logits, tokens, temperature):
    """log softmax(logits / T)[token] = z[token] − logsumexp(z), z = logits / T, in float32."""
    z = logits.float() / temperature
    return z.gather(-1, tokens[..., None]).squeeze(-1) - torch.logsumexp(z, -1)


def _entropy(logits, temperature):
    """H = logsumexp(z) − Σ_v softmax(z)_v z_v, z = logits / T, in float32."""
    z = logits.float() / temperature
    return torch.logsumexp(z, -1) - (F.softmax(z, -1) * z).sum(-1)


def forward_logprobs(model, input_ids, attention_mask, n_response, temperature=1.0, with_entropy=False, batch_size=0):
    """Log-probabilities of the last `n_response` tokens of each row under logits / T, with the
    position ids generate() uses for left padding. `model` is a causal LM, or a policy whose output
    also holds "values" (rollout.PolicyWithValue: then the values at those positions are returned).
    logits[:, t] predicts token t+1, so the response tokens at columns P..P+R-1 are scored by the
    logits at columns P-1..P+R-2: only those R + 1 columns' logits are computed (logits_to_keep).
    Columns that are padding in every row (left of the shortest prompt's start, right of the longest
    response's end) never enter the forward: a causal model's outputs at the other columns do not
    depend on them; their log-probs (and values, entropy) are returned as 0 (callers mask padding).
    Entropy, a statistic, is computed without gradients. `batch_size` > 0 runs the rows in micro-batches
    of similar response length, so that each leaves out more padding (for forwards without gradients).
    Returns dict(logprobs [B,R], values [B,R] or None, entropy)."""
    if batch_size and input_ids.shape[0] > batch_size:
        order = attention_mask[:, -n_response:].sum(-1).argsort(stable=True)   # rows by response length
        parts = [forward_logprobs(model, input_ids[rows], attention_mask[rows], n_response, temperature, with_entropy)
                 for rows in order.split(batch_size)]
        back = order.argsort()   # the rows in their given order again
        return {k: None if parts[0][k] is None else torch.cat([p[k] for p in parts])[back] for k in parts[0]}
    used = attention_mask.any(0)   # columns that hold a token in some row
    first = int(used.long().argmax())
    end = max(used.shape[0] - int(used.flip(0).long().argmax()), used.shape[0] - n_response + 1)
    R = n_response - (used.shape[0] - end)   # the response columns kept
    ids, mask = input_ids[:, first:end], attention_mask[:, first:end]
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), logits_to_keep=R + 1)
    logits = out["logits"][:, :-1]                                        # [B, R, V]
    values = out["values"][:, :-1] if "values" in out else None
    rows = max(1, LOGPROB_CHUNK // R)                                    # rows × R positions per chunk
    logprobs = chunked(lambda l, t: _token_logprobs(l, t, temperature), logits, ids[:, -R:], rows=rows)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = chunked(lambda l: _entropy(l, temperature), logits, rows=rows)

    def padded(x):   # back to n_response columns
        return None if x is None else F.pad(x, (0, n_response - R))
    return {"logprobs": padded(logprobs), "values": padded(values), "entropy": padded(entropy)}


def answer_logprobs(model, tokenizer, batch):
    """Per-row (sum of answer-token logprobs ℓ, number of answer tokens |y|) for a list of records."""
    ids, mask, answer_mask = encode_qa(tokenizer, [r["question"] for r in batch], [r["answer"] for r in batch])
    ids, mask, answer_mask = ids.to(model.device), mask.to(model.device), answer_mask[:, 1:].to(model.device)
    logprobs = forward_logprobs(model, ids, mask, ids.shape[1] - 1)["logprobs"]
    return (logprobs * answer_mask).sum(-1), answer_mask.sum(-1)
