"""Expected peak memory of a DareU run on one GPU, from the model's config alone (issue "7B on one GPU").

    python bench/memory.py --model-config llama2-7b --lora true --gradient-checkpointing true
    python bench/memory.py --model-config qwen3-8b          # or a path to a config.json
    python bench/memory.py --check all                      # measured against the real peak on this CPU

--check runs one iteration of the project's own unlearn() (models.trainable_model, frozen_reference)
on a random-init SmolLM2-135M architecture in float32 on the CPU, at a batch 2 cores can run (8 × 2
responses of R = 32, minibatch 8, retain 8, K = 2 epochs; about 4 minutes a mode), in a subprocess:
each phase's peak RSS (VmHWM, reset between phases) above the RSS before the model loads, against
the prediction for the same shapes (without the GPU-only parts: classifier, foreach AdamW).

Parameters are counted exactly: the model is built on the meta device (no weights). Everything else
is arithmetic on the config, the batch and these assumptions (b = bytes of the compute dtype, 2 for
bf16; N = parameters; A = LoRA parameters; n = tokens of a forward, rows × columns):
 1. Full fine-tuning keeps float32 masters (4N), float32 gradients (4N), AdamW's two states (8N) and a
    frozen reference in the compute dtype (bN). Under LoRA the base is frozen in the compute dtype (bN),
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
"""
import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
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
    P, R, mb, rb = cfg.prompt_len, cfg.response_len, cfg.minibatch_size, cfg.retain_batch_size
    T, B = P + R, cfg.prompts_per_iter * cfg.samples_per_prompt
    Tr, Rr = cfg.retain_len or T, cfg.retain_answer_len or R
    A = cfg.lora_rank * d["lora_per_rank"] if cfg.lora else 0
    trainable = (N if full else A) + H + 1           # + the float32 value head
    dc = dims(load_config(cfg.classifier_config)) if cfg.classifier_config != "none" else None
    parts = {"policy weights": (4 if full else b) * N, "LoRA adapters (fp32)": 4 * A,
             "gradients (fp32)": 4 * trainable, "AdamW states (fp32)": 8 * trainable,
             "reference copy": b * N if full else 0, "classifier": b * dc["N"] if dc else 0,
             "autocast weight copies": b * (d["N_linear"] if full else A) if autocast else 0}
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
    G = min(cfg.generate_batch, B)
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


# ----------------------------------------------------------------------------------------------
# --check: the real peak of one unlearn() iteration on this CPU, against the prediction

CHECK = dict(model_config="smollm2-135m", dtype="float32", device="cpu", classifier_config="none",
             prompts_per_iter=8, samples_per_prompt=2, minibatch_size=8, retain_batch_size=8, response_len=32)
MODES = {"full": dict(lora=False, gradient_checkpointing=False),
         "lora+ckpt": dict(lora=True, gradient_checkpointing=True)}


def rss():
    with open("/proc/self/status") as f:
        return {k: int(v) * 1024 for k, v in re.findall(r"(VmRSS|VmHWM):\s+(\d+) kB", f.read())}


def measure(spec):
    """In a fresh process: one unlearn() iteration of the project's code (models.trainable_model,
    frozen_reference, unlearn.unlearn) on a random-init model; each phase's peak RSS above the RSS
    before the model is loaded (bytes). Phases are cut by wrapping the functions unlearn() calls."""
    import ctypes
    import gc
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM

    import unlearn
    from helpers.records import owners_of, split_records, synthetic_world
    from evaluate import EvalConfig
    from helpers.lora import LoraConfig
    from helpers.models import frozen_reference, train_tokenizer, trainable_model
    from ppo import PPOConfig
    from helpers.prompts import encode_qa, prompt_ids
    from reward import RewardConfig
    from rollout import RolloutConfig
    torch.set_num_threads(2)
    records = synthetic_world(n_owners=4, seed=0)
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in records], vocab_size=400)
    forget, retain = split_records(records, owners_of(records)[:1])
    forget = forget[:spec["prompts_per_iter"]]      # every question sampled: P is exact
    retain = sorted(retain, key=lambda r: -len(encode_qa(tok, [r["question"]], [r["answer"]])[0][0]))
    retain = retain[:spec["retain_batch_size"]]      # every retain batch is these rows: T_retain exact
    ids, _, answer = encode_qa(tok, [r["question"] for r in retain], [r["answer"] for r in retain])
    shape = dict(prompt_len=max(len(prompt_ids(tok, r["question"])) for r in forget), retain_len=ids.shape[1],
                 retain_answer_len=int(answer.sum(1).max()))

    class StandIn:   # the classifier: a_F from the response length (as tests/test_unlearn.py)
        def forget_attribution(self, questions, responses, forget_owners):
            return torch.tensor([min(1.0, len(r) / 40) for r in responses])

    libc, marks = ctypes.CDLL("libc.so.6"), {}

    def mark(phase):   # the peak since the previous mark is `phase`'s; then a new interval starts (VmHWM := VmRSS)
        libc.malloc_trim(0)
        now = rss()
        marks[phase] = max(marks.get(phase, 0), now["VmHWM"] - base)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return now["VmRSS"] - base

    def cut(fn, before, after):   # fn, its peak recorded under `after` (and what came before it under `before`)
        def wrapper(*args, **kwargs):
            if before:
                mark(before)
            out = fn(*args, **kwargs)
            left = mark(after)
            if after == "optimizer step":   # what stays between steps: weights, gradients, AdamW states
                marks["persistent"] = max(marks.get("persistent", 0), left)
            return out
        return wrapper

    unlearn.rollout = cut(unlearn.rollout, "setup", "generation")
    unlearn.forward_logprobs = cut(unlearn.forward_logprobs, None, "rollout forward")
    torch.Tensor.backward = cut(torch.Tensor.backward, "PPO forward + retain", "PPO backward")
    torch.optim.AdamW.step = cut(torch.optim.AdamW.step, None, "optimizer step")
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(spec["model_config"])
        config.update(dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp)    # a random-init model folder
        tok.save_pretrained(tmp)
        gc.collect()
        libc.malloc_trim(0)
        base = rss()["VmRSS"]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        lora = LoraConfig(rank=spec["lora_rank"]) if spec["lora"] else None
        model, tok = trainable_model(tmp, "cpu", torch.float32, lora, spec["gradient_checkpointing"])
        ref = frozen_reference(model, torch.float32)
        unlearn.unlearn(
            model, tok, ref, StandIn(), forget, retain, owners_of(forget),
            unlearn.UnlearnConfig(iterations=1, prompts_per_iter=spec["prompts_per_iter"],
                                  samples_per_prompt=spec["samples_per_prompt"], eval_every=0, sample_every=0),
            RolloutConfig(max_new_tokens=spec["response_len"]), RewardConfig(),
            PPOConfig(epochs=2, minibatch_size=spec["minibatch_size"], retain_batch_size=spec["retain_batch_size"]),
            EvalConfig(), os.path.join(tmp, "metrics.jsonl"))
        line = json.loads(open(os.path.join(tmp, "metrics.jsonl")).read().splitlines()[-1])
    mark("end")
    peak = max(v for k, v in marks.items() if k != "persistent")
    return dict(shape, peak=peak, phases=marks, response_tokens=line["response_tokens"])


def check(mode):
    """measure() in a fresh subprocess, the prediction of the same settings, compared per phase."""
    spec = dict(CHECK, **MODES[mode], lora_rank=MemoryConfig.lora_rank)
    # glibc's malloc raises its mmap threshold (up to 32 MB) after a large block is freed, and then keeps
    # freed blocks below it in its arenas: RSS tracks the allocator, not the tensors (LoRA + checkpointing
    # measured 1.45× the prediction). A fixed threshold returns every freed block over 128 kB at once.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    cfg = MemoryConfig(**CHECK, **MODES[mode], first_iteration=True, prompt_len=measured["prompt_len"],
                       retain_len=measured["retain_len"], retain_answer_len=measured["retain_answer_len"])
    pred = predict(cfg)
    rows = {k: (gib(measured["phases"][k]), gib(v)) for k, v in pred["phases"].items()}
    rows["persistent (after a step)"] = (gib(measured["phases"]["persistent"]), gib(sum(pred["parts"].values())))
    rows["peak"] = (gib(measured["peak"]), gib(pred["peak"]))
    print(table(cfg, pred))
    print(f"  {'CPU check ' + mode + ' (GiB)':<28}| measured  predicted  ratio")
    for k, (m, p) in rows.items():
        print(f"  {k:<28}| {m:8.3f}  {p:9.3f}  {m / p:5.3f}")
    return dict(config=dataclasses.asdict(cfg), measured=measured, ratio=round(measured["peak"] / pred["peak"], 3),
                rows_gib={k: dict(measured=m, predicted=p, ratio=round(m / p, 3)) for k, (m, p) in rows.items()})


def main(argv=None):
    from helpers.cli import HelpFormatter, add_config_args, config_from_args
    p = argparse.ArgumentParser(description="Expected peak GPU memory of a DareU run, from a model config.",
                                formatter_class=HelpFormatter)
    add_config_args(p, MemoryConfig, title="run")
    p.add_argument("--check", choices=[*MODES, "all"], help="measure one iteration on this CPU and compare")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "memory.json"), help="JSON results")
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    cfg = config_from_args(MemoryConfig, args)
    result = predict(cfg)
    print(table(cfg, result))
    run = {"config": dataclasses.asdict(cfg), "parts_gib": {k: gib(v) for k, v in result["parts"].items()},
           "phases_gib": {k: gib(v) for k, v in result["phases"].items()}, "peak_gib": gib(result["peak"]),
           "grid_peak_gib": grid(cfg)}
    print("  peak by mode (GiB):", ", ".join(f"{k} {v}" for k, v in run["grid_peak_gib"].items()))
    # the results file gathers runs: one entry per model and mode, one per --check mode
    results = {}
    if os.path.isfile(args.out):
        with open(args.out, encoding="utf-8") as f:
            results = json.load(f)
    results[f"{cfg.model_config} {'lora' if cfg.lora else 'full'}{'+ckpt' if cfg.gradient_checkpointing else ''} "
            f"{cfg.dtype}"] = run
    for mode in (MODES if args.check == "all" else [args.check] if args.check else []):
        results[f"check {mode}"] = check(mode)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
