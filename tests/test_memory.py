"""helpers/memory.py: exact parameter counts from the meta device, the LoRA adapter count, the per-layer
activation formula against autograd's own saved tensors, and the prediction's ordering of modes."""
import json

import pytest
import torch

from helpers import memory
from helpers.cli import DareuError
from helpers.lora import LoraConfig, add_lora

TARGETS = tuple(memory.MemoryConfig().lora_targets.split(","))


def test_meta_parameter_counts():
    """Llama-2-7B's published total; Qwen3-8B against its formula (untied head, q/k norms, GQA)."""
    assert memory.dims(memory.load_config("llama2-7b"))["N"] == 6_738_415_616
    H, I, L, nh, kvh, hd, V = 4096, 12288, 36, 32, 8, 128, 151936
    layer = H * nh * hd * 2 + H * kvh * hd * 2 + 2 * hd + 3 * H * I + 2 * H
    assert memory.dims(memory.load_config("qwen3-8b"))["N"] == 2 * V * H + L * layer + H == 8_190_735_360


def test_lora_adapter_count_is_rank_times_in_plus_out():
    d = memory.dims(memory.load_config("llama2-7b"), TARGETS)
    per_layer = 4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096)   # q k v o, gate up, down
    assert 16 * d["lora_per_rank"] == 16 * 32 * per_layer == 39_976_960


@pytest.mark.parametrize("model", ["llama2-7b", "qwen3-8b"])
def test_lora_and_checkpointing_lower_the_peak(model):
    peak = {(lora, ckpt): memory.predict(memory.MemoryConfig(model_config=model, lora=lora,
                                                             gradient_checkpointing=ckpt))["peak"]
            for lora in (False, True) for ckpt in (False, True)}
    for ckpt in (False, True):
        assert peak[True, ckpt] < peak[False, ckpt]
    for lora in (False, True):
        assert peak[lora, True] < peak[lora, False]


def saved_bytes(model, ids, mask, dtype):
    """Bytes autograd saves for backward in a forward of the decoder stack (parameters excluded)."""
    params, seen = {p.untyped_storage().data_ptr() for p in model.parameters()}, {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        model.model(input_ids=ids, attention_mask=mask)
    return sum(seen.values())


@pytest.mark.parametrize("model_type,kvh", [("llama", 4), ("qwen3", 2)])
@pytest.mark.parametrize("dtype,lora", [(torch.float32, False), (torch.bfloat16, False), (torch.float32, True),
                                        (torch.bfloat16, True)])
def test_layer_activations_equal_what_autograd_saves(model_type, kvh, dtype, lora):
    """Assumptions 2 and 3: one more decoder layer adds layer_bytes per token, plus (under autocast) a
    compute-dtype copy of the weights that get gradients, on a left-padded batch."""
    from transformers import AutoConfig, AutoModelForCausalLM
    rows, T, r = 2, 12, 4

    def build(layers):
        config = AutoConfig.for_model(model_type, vocab_size=64, hidden_size=32, intermediate_size=88, head_dim=8,
                                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=kvh)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
        if lora:
            add_lora(model.to(dtype), LoraConfig(rank=r, targets=",".join(TARGETS)))
            model.eval()
        return config, model
    ids = torch.randint(0, 64, (rows, T))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    config, one = build(1)
    _, three = build(3)
    per_layer = (saved_bytes(three, ids, mask, dtype) - saved_bytes(one, ids, mask, dtype)) / 2
    d = memory.dims(config, TARGETS)
    b, full = (4 if dtype == torch.float32 else 2), not lora
    casts = 0
    if b < 4:   # the weights of one layer that autocast copies: its linears' (full) or its adapters (LoRA)
        layer = one.model.layers[0]
        casts = b * sum(p.numel() for name, p in layer.named_parameters()
                        if ("lora_" in name if lora else name.endswith("weight") and p.ndim == 2))
    assert per_layer == rows * T * memory.layer_bytes(d, b, full, TARGETS, r, T) + casts


def test_a_run_that_cannot_fit_is_refused_from_the_config_alone(tmp_path):
    """unlearn.py's check before loading any weight: full fine-tuning of Llama-2-7B (a config.json, no
    weights) on an 80 GB device is refused in one line naming the predicted peak and the flags that fit;
    with those flags it passes."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(memory.CONFIGS["llama2-7b"]))
    cfg = memory.MemoryConfig(model_config=str(config))
    full = memory.predict(cfg)["peak"]
    fitting = memory.predict(memory.MemoryConfig(model_config=str(config), lora=True, gradient_checkpointing=True))["peak"]
    with pytest.raises(DareuError) as refused:
        memory.check_fits(cfg, 80e9)
    line = str(refused.value)
    assert "\n" not in line and f"about {full / 2 ** 30:.0f} GiB" in line and "this device's 75 GiB" in line
    assert "--lora" in line and full > 80e9
    assert memory.check_fits(memory.MemoryConfig(model_config=str(config), lora=True, gradient_checkpointing=True),
                             80e9) == fitting < 80e9


def test_the_per_gpu_peak_under_fsdp_shards_the_weights_and_the_rows():
    """N processes: the sharded parts are 1/N of one process's (the classifier whole on each), the rest of
    the peak shrinks with the rows each process scores, and one process is the unsharded prediction."""
    one = memory.predict(memory.MemoryConfig(gradient_checkpointing=True))
    assert memory.predict(memory.MemoryConfig(gradient_checkpointing=True, processes=1)) == one
    peaks = [memory.predict(memory.MemoryConfig(gradient_checkpointing=True, processes=n)) for n in (2, 4, 8)]
    for n, p in zip((2, 4, 8), peaks):
        for part in ("policy weights", "gradients (fp32)", "AdamW states (fp32)", "reference copy"):
            assert p["parts"][part] == pytest.approx(one["parts"][part] / n)
        assert p["parts"]["classifier"] == one["parts"]["classifier"] and p["parts"]["gathered weights (FSDP)"] > 0
    assert one["peak"] > peaks[0]["peak"] > peaks[1]["peak"] > peaks[2]["peak"]
