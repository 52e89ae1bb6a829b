"""Expected peak GPU memory of a DareU run, from the model's config alone: unlearn.py checks it before
loading any weight, and bench/memory.py prints it (and measures it against a real run on a CPU).

Parameters are counted exactly: the model is built on the meta device (no weights). Everything else
is arithmetic on the config, the batch and these assumptions (b = bytes of the compute dtype, 2 for
bf16; N = parameters; A = LoRA parameters; n = tokens of a forward, rows × columns):
 1. Full fine-tuning keeps float32 masters (4N), float32 gradients (4N), AdamW's two states (8N) and a
    frozen float32 copy of the masters as the reference (4N: it runs under the same autocast, so that
    it computes exactly what the policy did before its first update). Under LoRA the base is frozen in the compute dtype (bN),
    adapters, their gradients and AdamW states are float32 (16A), and there is no reference copy (the
    reference is the same weights with adapters off). Gradients of the last step live until the next
    step's zero_grad, i.e. through the next forward: they count in every phase but the backward.
 2. Autocast (compute dtype below float32) makes a b-byte copy of every float32 weight an nn.Linear
    uses (bN_linear under full fine-tuning, bA under LoRA). models.autocast runs without torch's weight
    cache, so a copy lives only while its matmul runs, or, in a forward with gradients, until the
    backward that needs it: all of them without checkpointing, one layer's (1/L) with it.
 3. Saved activations of a decoder layer, per token, in a forward with gradients (checked against
    autograd's saved tensors by tests/test_memory.py): each RMSNorm keeps its float32 input and, with a
    trainable weight, its normalised output; each nn.Linear that gets a gradient keeps its input, one
    copy per linear when autocast casts it (q, k, v and gate, up of a float32 residual stream; every
    LoRA adapter casts x.float()), else one shared copy (o_proj reads SDPA's own output); SDPA keeps
    q, k, v (k, v repeated to all heads: a left-padded batch has a mask, so no native GQA), its output,
    its float32 log-sum-exp and the mask in the compute dtype, never a [T, T] score matrix; the MLP
    keeps gate, act(gate) and up; Qwen3's q_norm, k_norm as a norm each. The residual stream is float32
    under full fine-tuning (float32 embeddings), the compute dtype under LoRA.
 4. Gradient checkpointing keeps only each layer's input [n, hidden]; backward recomputes one layer
    at a time (one layer's activations plus ~3 [n, intermediate] gradients alive).
 5. Forwards without gradients (generation prefill, rollout, reference, classifier) peak in the MLP:
    residual and normed input (2 × [n, hidden]) plus act(gate), up and their product (3 × [n, inter.]).
 6. Generation: KV cache L × G × (P+R) × kv_heads × head_dim × (key + value bytes), G = generate
    batch; keys are float32 when the residual stream is (RoPE's cos/sin take its dtype); logits of one
    position per row plus three float32 [G, V] buffers of the sampler.
 7. The design (models.forward_logprobs, ppo.retain_distillation): rollout forwards of policy and
    reference run in micro-batches of minibatch_size rows; the LM head computes logits for the last
    R+1 positions only (logits_to_keep: [mb, R+1, V] in the compute dtype, kept as the inputs of
    checkpointed chunks); float32 work runs in blocks of `chunk` positions × V, alive at once: 2 for
    log-probs, 3 for the entropy (no gradient), 5 for the retain KL (two log-softmaxes, exp, difference,
    product); the value head reads the final hidden state at the kept positions. Retain distillation
    over [rb, T_retain] keeps both models' logits at the rb × R_retain answer positions (a gathered
    copy each) until backward, with the PPO forward's activations (one loss, one backward).
 8. Backward runs the retain graph first (it was created last), with the gradients freed
    (zero_grad(set_to_none)) but the LM head's; the logits' gradient takes 2 × [rows, K, V] in the
    compute dtype (a chunk's slice gradient is full size) plus 5 float32 blocks.
 9. AdamW on CUDA is foreach: one float32 temporary the size of all trainable parameters; on a CPU,
    per tensor. Not counted: the CUDA context (~0.5 GiB), allocator fragmentation, the tokenizer.
 10. Under torchrun --fsdp with N processes (one GPU each), FSDP2 shards the policy's weights, gradients
    and AdamW states, and the reference copy, 1/N on each (the classifier is whole on each); each
    process samples and scores 1/N of the rows of every batch, minibatch and retain batch; it gathers one
    decoder layer's whole weights while the layer runs and the next one ahead, and the root's
    (embeddings, head) through the forward.
"""
import dataclasses
import json
from dataclasses import dataclass

from helpers.cli import DareuError

GiB = 2 ** 30

# Embedded configs (no download). smollm2-135m is the default classifier and the --check model.
CONFIGS = {
    "llama2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                      max_position_embeddings=4096, tie_word_embeddings=False),
    "qwen3-8b": dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                     max_position_embeddings=40960, tie_word_embeddings=False),
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=512, tie_word_embeddings=False),
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         max_position_embeddings=8192, tie_word_embeddings=True),
}
GROUPS = (("attn_in", ("q_proj", "k_proj", "v_proj")), ("o", ("o_proj",)), ("mlp_in", ("gate_proj", "up_proj")),
          ("down", ("down_proj",)))


@dataclass
class MemoryConfig:
    model_config: str = "llama2-7b"      # llama2-7b, qwen3-8b, smollm2-135m, tiny or a config.json path
    lora: bool = False                   # LoRA adapters over a frozen base (else full fine-tuning)
    lora_rank: int = 16                  # r
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"   # adapted nn.Linear
    gradient_checkpointing: bool = False  # recompute decoder layers in backward
    dtype: str = "bfloat16"              # compute dtype: bfloat16 or float32
    prompts_per_iter: int = 64           # forget questions per iteration
    samples_per_prompt: int = 2          # responses per question (B = prompts × samples)
    minibatch_size: int = 16             # responses per PPO step (and per rollout forward micro-batch)
    retain_batch_size: int = 16          # retain QA pairs per PPO step
    generate_batch: int = 64             # prompts per generate() call
    prompt_len: int = 64                 # P, prompt tokens (left-padded width)
    response_len: int = 107              # R, response tokens (TOFU forget10, Llama-2 tokenizer, fitted)
    retain_len: int = 0                  # T_retain, retain QA tokens; 0 = P + R
    retain_answer_len: int = 0           # answer tokens of a retain row; 0 = R
    chunk: int = 1024                    # positions per float32 log-prob / KL chunk (models.LOGPROB_CHUNK)
    classifier_config: str = "smollm2-135m"  # the classifier's config (as --model-config), or none
    classifier_batch: int = 64           # texts per classifier forward
    device: str = "cuda"                 # cuda: foreach AdamW temporaries; cpu: per tensor
    first_iteration: bool = False        # no gradients or AdamW states yet in generation and rollout (--check)
    processes: int = 1                   # N GPUs under torchrun --fsdp: the peak of one of them


def load_config(name):
    """A transformers config from an embedded name or a config.json path."""
    from transformers import AutoConfig
    if name in CONFIGS:
        d = dict(CONFIGS[name])
        return AutoConfig.for_model(d.pop("model_type"), **d)
    with open(name, encoding="utf-8") as f:
        d = json.load(f)
    return AutoConfig.for_model(d.pop("model_type"), **d)


def dims(config, lora_targets=()):
    """Exact parameter counts from a meta-device model, and the shapes the estimates use."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    c = config.get_text_config()
    head = model.get_output_embeddings()
    linears = [(name.rpartition(".")[2], m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return dict(N=sum(p.numel() for p in model.parameters()), H=c.hidden_size, I=c.intermediate_size,
                L=c.num_hidden_layers, nh=c.num_attention_heads, kvh=c.num_key_value_heads, hd=hd, V=c.vocab_size,
                # weights autocast casts: every nn.Linear (the LM head too, tied or not)
                N_linear=sum(m.weight.numel() for _, m in linears),
                # A = Σ_targets r·(in + out) / r: per unit rank
                lora_per_rank=sum(m.in_features + m.out_features for k, m in linears if k in lora_targets
                                  and m is not head),
                qk_norm=any(name.endswith("q_norm") for name, _ in model.named_modules()))


def layer_bytes(d, b, full, targets, r, T):
    """Saved activations of one decoder layer per token, forward with gradients (assumption 3)."""
    H, I, nh, kvh, hd = d["H"], d["I"], d["nh"], d["kvh"], d["hd"]
    s = 4 if full else b              # residual stream bytes
    autocast = b < 4
    norm = lambda width, in_bytes: 4 * width + (in_bytes * width if full else 0)   # fp32 input (+ output)
    total = 2 * (norm(H, s) + 4)      # two RMSNorms (+ their float32 rsqrt, 4 bytes)
    if d["qk_norm"]:
        total += norm((nh + kvh) * hd, b) + 4 * (nh + kvh)
    width = {"attn_in": H, "o": nh * hd, "mlp_in": H, "down": I}
    for group, names in GROUPS:       # inputs of the linears that get a gradient
        k = len(names) if full else len(set(names) & set(targets))
        if k and autocast and (not full or group in ("attn_in", "mlp_in")):
            total += k * b * width[group]         # a cast copy per linear
        elif k and group != "o":
            total += b * width[group]             # one shared tensor (o_proj: SDPA's output, counted below)
    if not full:
        total += len(targets) * r * b             # x·Aᵀ, input of the second adapter matmul
    total += 4 * b * nh * hd + 4 * nh + b * T     # SDPA: q, k, v, out; log-sum-exp; mask
    return total + 3 * b * I                      # MLP: gate, act(gate), up


def predict(cfg: MemoryConfig):
    """Parts and phase totals (bytes) of one DareU iteration under `cfg`. Returns dict(parts, phases, peak, dims)."""
    targets = cfg.lora_targets.split(",")
    d = dims(load_config(cfg.model_config), targets)
    H, I, L, V, N = d["H"], d["I"], d["L"], d["V"], d["N"]
    b, full, ckpt = (4 if cfg.dtype == "float32" else 2), not cfg.lora, cfg.gradient_checkpointing
    s, autocast = (4 if full else b), b < 4          # residual stream bytes; autocast on
    n = cfg.processes                                 # assumption 10: each holds 1/n, and 1/n of the rows
    P, R, mb, rb = cfg.prompt_len, cfg.response_len, -(-cfg.minibatch_size // n), -(-cfg.retain_batch_size // n)
    T, B = P + R, cfg.prompts_per_iter * cfg.samples_per_prompt
    Tr, Rr = cfg.retain_len or T, cfg.retain_answer_len or R
    A = cfg.lora_rank * d["lora_per_rank"] if cfg.lora else 0
    trainable = (N if full else A) + H + 1           # + the float32 value head
    dc = dims(load_config(cfg.classifier_config)) if cfg.classifier_config != "none" else None
    layer = (N - 2 * V * H) / L                       # one decoder layer's weights
    parts = {"policy weights": (4 if full else b) * N / n, "LoRA adapters (fp32)": 4 * A / n,
             "gradients (fp32)": 4 * trainable / n, "AdamW states (fp32)": 8 * trainable / n,
             "reference copy": 4 * N / n if full else 0, "classifier": b * dc["N"] if dc else 0,
             "autocast weight copies": b * (d["N_linear"] if full else A) if autocast else 0,
             # FSDP gathers a layer's weights while it runs, and the next one ahead; the root's (embeddings,
             # head) for the whole forward
             "gathered weights (FSDP)": (4 if full else b) * (2 * layer + 2 * V * H) if n > 1 else 0}
    persistent = sum(v for k, v in parts.items() if k != "autocast weight copies")
    saved_casts = parts["autocast weight copies"] / (L if ckpt else 1)   # forward with gradients → backward

    def nograd(rows, t, dd=d, ss=s):                 # assumption 5
        return rows * t * (2 * ss * dd["H"] + 3 * b * dd["I"])

    def block(positions):                            # a float32 [positions, V] block (assumption 7)
        return 4 * min(cfg.chunk, positions) * V

    def acts(rows, t, k, value):                     # forward with gradients, k logit positions kept
        layers = rows * t * L * (s * H if ckpt else layer_bytes(d, b, full, targets, cfg.lora_rank, t))
        norm = rows * t * (4 * H + (s * H if full else 0) + 4 + 8)   # final norm (+ token ids)
        y = rows * k * b * H * (1 + value) if full and autocast else rows * t * s * H   # LM/value head inputs
        return layers, layers + norm + y + b * rows * k * V         # (layers alone, everything)

    ppo_chunk = min(mb, max(1, cfg.chunk // R)) * R  # rows of R positions per chunk
    G = -(-min(cfg.generate_batch, B) // n)
    kv = L * G * T * d["kvh"] * d["hd"] * ((4 if s == 4 else b) + b)
    phases = {"generation": persistent + kv + max(nograd(G, P), b * G * V + 12 * G * V)}
    fwd = nograd(mb, T) + mb * T * s * H + b * mb * (R + 1) * V + 2 * block(ppo_chunk)
    clf = nograd(cfg.classifier_batch, R + 8, dc, b) + b * cfg.classifier_batch * dc["V"] if dc else 0
    phases["rollout forward"] = persistent + max(fwd, clf)
    if cfg.first_iteration:
        for k in ("generation", "rollout forward"):
            phases[k] -= parts["gradients (fp32)"] + parts["AdamW states (fp32)"]
    (l1, a1), (l2, a2) = acts(mb, T, R + 1, True), acts(rb, Tr, Rr, False)
    ref_logits = b * rb * Rr * V                     # the reference's, at answer positions (a copy)
    phases["PPO forward + retain"] = persistent + saved_casts + max(
        a1 + 3 * block(ppo_chunk),                                            # entropy chunk
        a1 + nograd(rb, Tr) + b * rb * (Rr + 1) * V + ref_logits,             # reference forward
        a1 + ref_logits + a2 + max(b * rb * (Rr + 1) * V, 5 * block(rb * Rr)))  # retain KL chunk
    # backward (assumption 8): the retain graph first (created last), then the PPO graph
    bwd = max(a1 + a2 + ref_logits + 2 * b * rb * (Rr + 1) * V + 5 * block(rb * Rr),
              a1 + 2 * b * mb * (R + 1) * V + 4 * block(ppo_chunk))
    if ckpt:   # recompute one layer (assumption 4)
        layer = lambda n: n * (layer_bytes(d, b, full, targets, cfg.lora_rank, T) + 3 * b * I + 2 * s * H)
        bwd = max(bwd, a1 + l2 + layer(rb * Tr), l1 + layer(mb * T))
    phases["PPO backward"] = persistent + saved_casts - parts["gradients (fp32)"] + 4 * V * H * full + bwd
    phases["optimizer step"] = persistent + 4 * (trainable if cfg.device.startswith("cuda") else V * H * full)
    return dict(parts=parts, phases=phases, peak=max(phases.values()), dims=d)


def gib(x):
    return round(x / GiB, 2)


def table(cfg, result):
    """The table: parts, phase totals, peak (GiB)."""
    mode = f"{'LoRA r=' + str(cfg.lora_rank) if cfg.lora else 'full fine-tuning'}, " \
           f"{'gradient checkpointing' if cfg.gradient_checkpointing else 'no checkpointing'}, {cfg.dtype}"
    lines = [f"{cfg.model_config} ({result['dims']['N'] / 1e9:.2f} B parameters): {mode}",
             f"  batch {cfg.prompts_per_iter}×{cfg.samples_per_prompt}, minibatch {cfg.minibatch_size}, "
             f"retain {cfg.retain_batch_size}, P {cfg.prompt_len}, R {cfg.response_len}",
             f"  {'part':<28}|   GiB"]
    lines += [f"  {k:<28}| {gib(v):6.2f}" for k, v in result["parts"].items() if v]
    lines += [f"  {'phase: ' + k:<28}| {gib(v):6.2f}" for k, v in result["phases"].items()]
    lines.append(f"  {'predicted peak':<28}| {gib(result['peak']):6.2f}")
    return "\n".join(lines)


def grid(cfg):
    """Predicted peak (GiB) for full fine-tuning vs LoRA, with and without checkpointing."""
    return {f"{'lora' if lora else 'full'}{'+ckpt' if ckpt else ''}":
            gib(predict(dataclasses.replace(cfg, lora=lora, gradient_checkpointing=ckpt))["peak"])
            for lora in (False, True) for ckpt in (False, True)}


def check_fits(cfg: MemoryConfig, capacity):
    """Before any weight is loaded: refuse (DareuError, one line) a run whose predicted peak exceeds
    `capacity` bytes (the device's memory), naming the peak and the memory flags under which it fits."""
    peak = predict(cfg)["peak"]
    if peak <= capacity:
        return peak
    fits = [(flags, p) for flags, p in ((f"--lora{' --gradient-checkpointing' if ckpt else ''}",
                                          predict(dataclasses.replace(cfg, lora=True, gradient_checkpointing=ckpt))["peak"])
                                         for ckpt in (False, True)) if p <= capacity]
    mode = f"{'LoRA' if cfg.lora else 'full fine-tuning'}{' with gradient checkpointing' if cfg.gradient_checkpointing else ''}"
    raise DareuError(f"{mode} of {cfg.model_config} needs about {gib(peak):.0f} GiB at its peak (predicted from its "
                     f"config), more than this device's {gib(capacity):.0f} GiB; "
                     + (f"{fits[0][0]} fits ({gib(fits[0][1]):.0f} GiB)" if fits else
                        "not even --lora --gradient-checkpointing fits: a smaller batch (--minibatch-size, "
                        "--retain-batch-size, --prompts-per-iter) or a larger device"))
