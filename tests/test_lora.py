"""helpers/lora.py on a tiny Llama built here (no downloads): exact start, exact reference, merge, freezing, dtypes."""
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from helpers.cli import DareuError
from helpers.lora import (LoraConfig, LoraLinear, adapters_disabled, add_lora, load_lora_state_dict,
                          lora_parameters, lora_state_dict, merge_lora)

torch.set_num_threads(1)
IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))


def tiny_llama(seed=0):
    """2 layers, hidden 64, vocab 128, tied embeddings (as in SmolLM2), in eval mode."""
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def adapted(dtype=torch.float32, dropout=0.0):
    """(base model, the same weights with LoRA added): two copies, so the base stays untouched."""
    base = tiny_llama().to(dtype)
    model = tiny_llama().to(dtype)
    torch.manual_seed(1)
    add_lora(model, LoraConfig(dropout=dropout))
    return base, model


def randomise_B(model):
    """Give every B random values (they start at zero), so the adapters change the model."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_adapted_model_starts_equal_to_the_base_model():
    base, model = adapted()
    assert len(lora_parameters(model)) == 2 * 7 * 2              # A and B, 7 targets, 2 layers
    layer = model.model.layers[0].mlp.down_proj                  # in_features 128
    bound = 1 / layer.base.in_features ** 0.5                    # nn.Linear's: kaiming-uniform, a = √5
    assert 0.9 * bound < layer.lora_A.abs().max() <= bound and not layer.lora_B.any()
    assert torch.equal(logits(model), logits(base))


def test_adapters_disabled_is_the_base_model_exactly():
    base, model = adapted()
    randomise_B(model)
    with adapters_disabled(model):
        assert torch.equal(logits(model), logits(base))
        with adapters_disabled(model):
            pass
        assert torch.equal(logits(model), logits(base))        # still off after a nested block
    assert (logits(model) - logits(base)).abs().max() > 1e-3     # on again after the block


def test_merge_saves_a_plain_model_with_the_adapted_logits(tmp_path):
    base, model = adapted()
    randomise_B(model)
    expected = logits(model)
    merge_lora(model).save_pretrained(tmp_path / "merged")
    base.save_pretrained(tmp_path / "base")
    keys = {}
    for name in ("merged", "base"):
        with safe_open(str(tmp_path / name / "model.safetensors"), "pt") as f:
            keys[name] = set(f.keys())
    assert keys["merged"] == keys["base"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert torch.allclose(logits(reloaded), expected, atol=1e-5, rtol=0)
    assert (logits(reloaded) - logits(base)).abs().max() > 1e-3   # the update was merged, not dropped


def test_only_adapters_train_and_the_base_stays_bit_identical():
    model = tiny_llama()
    adapters = add_lora(model, LoraConfig())
    assert {id(p) for p in adapters} == {id(p) for p in model.parameters() if p.requires_grad}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(lora_state_dict(model))
    randomise_B(model)                         # so that A gets a gradient too
    base_before = {n: p.clone() for n, p in model.named_parameters() if "lora_" not in n}
    adapters_before = {n: p.clone() for n, p in model.named_parameters() if "lora_" in n}
    optimizer = torch.optim.AdamW(adapters, lr=1e-2, weight_decay=0.0)
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in base_before.items())
    assert all(not torch.equal(params[n], p) for n, p in adapters_before.items())


def test_bf16_base_keeps_its_dtype_with_float32_adapters():
    base, model = adapted(dtype=torch.bfloat16)
    randomise_B(model)
    assert {p.dtype for p in lora_parameters(model)} == {torch.float32}
    assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    assert logits(model).dtype == logits(base).dtype == torch.bfloat16
    layer = model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    float32_sum = layer.base(x).float() + layer.scale * (x.float() @ layer.lora_A.T @ layer.lora_B.T)
    assert torch.equal(layer(x), float32_sum.to(torch.bfloat16))   # summed in float32, rounded once


def test_lora_state_dict_round_trip():
    _, model = adapted()
    randomise_B(model)
    state = {k: v.clone() for k, v in lora_state_dict(model).items()}
    assert len(state) == 2 * 7 * 2 and all(k.endswith(("lora_A", "lora_B")) for k in state)
    _, fresh = adapted()
    torch.manual_seed(9)
    for p in lora_parameters(fresh):
        torch.nn.init.normal_(p)
    load_lora_state_dict(fresh, state)
    assert all(torch.equal(v, lora_state_dict(fresh)[k]) for k, v in state.items())
    assert torch.equal(logits(fresh), logits(model))
    with pytest.raises(DareuError, match="does not fit"):
        load_lora_state_dict(fresh, {**state, "extra.lora_A": state[next(iter(state))]})


def test_targets_matching_nothing_or_the_output_layer_are_refused():
    with pytest.raises(DareuError, match=r"--lora-targets 'wq,wk'.*q_proj"):
        add_lora(tiny_llama(), LoraConfig(targets="wq,wk"))
    with pytest.raises(DareuError, match="lm_head is the output layer"):
        add_lora(tiny_llama(), LoraConfig(targets="q_proj,lm_head"))


@pytest.mark.parametrize("field, value", [("rank", 0), ("alpha", 0.0), ("dropout", 1.0), ("dropout", -0.1),
                                          ("targets", " , ")])
def test_config_refuses_bad_values(field, value):
    from types import SimpleNamespace

    from helpers.cli import config_from_args
    from helpers.lora import LORA_CHECKS
    flags = SimpleNamespace(**{f"lora_{k}": v for k, v in {**vars(LoraConfig()), field: value}.items()})
    with pytest.raises(DareuError, match=f"^--lora-{field}"):
        config_from_args(LoraConfig, flags, LORA_CHECKS, prefix="lora")


def test_gradient_checkpointing_gives_the_same_loss_and_adapter_gradients():
    """Frozen base + checkpointed layers: in transformers 5.24 activation_checkpointing_enable() (which
    gradient_checkpointing_enable() now aliases) defaults to use_reentrant=False, so gradients reach
    the adapters although no input of a checkpointed layer requires grad. Dropout 0.05 is on: the
    recomputation must replay the same masks."""
    def loss_and_grads(checkpointing):
        _, model = adapted(dropout=0.05)
        randomise_B(model)
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        forwards = []
        model.model.layers[1].self_attn.q_proj.register_forward_pre_hook(lambda *_: forwards.append(1))
        torch.manual_seed(5)
        loss = model(input_ids=IDS, labels=IDS, use_cache=False).loss
        loss.backward()
        assert len(forwards) == (2 if checkpointing else 1)     # the layer was recomputed in backward
        return loss.detach(), [p.grad for p in lora_parameters(model)]

    loss, grads = loss_and_grads(checkpointing=False)
    loss_ckpt, grads_ckpt = loss_and_grads(checkpointing=True)
    assert torch.allclose(loss_ckpt, loss, atol=1e-6, rtol=0)
    assert all(g.abs().max() > 0 for g in grads)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(grads_ckpt, grads))
    _, model = adapted(dropout=0.05)
    randomise_B(model)
    torch.manual_seed(6)
    with torch.no_grad():
        other_masks = model.train()(input_ids=IDS, labels=IDS).loss
    assert (other_masks - loss).abs() > 1e-6       # the dropout is on: the masks had to be replayed


def scaled_layer(dtype):
    """A LoraLinear over an nn.Linear(16, 12) with a bias, rank 4 and α 6 (α/r = 1.5: neither 1 nor 2, so
    a scale of α, of 1 or of 2/r shows), B random so the update is not 0. Returns (layer, x)."""
    generator = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    layer = LoraLinear(torch.nn.Linear(16, 12).to(dtype), LoraConfig(rank=4, alpha=6.0))
    with torch.no_grad():
        layer.lora_B.copy_(0.3 * torch.randn(layer.lora_B.shape, generator=generator))
    return layer, torch.randn(5, 16, generator=generator).to(dtype)


@torch.no_grad()
def test_lora_output_is_the_base_plus_alpha_over_r_times_BAx():
    """y' = W x + b + (α/r)·B A x with α/r = 6/4 written out as plain matmuls: in float32 (to rounding) and
    over a bf16 base (the float32 update added to the base output in float32, rounded once)."""
    layer, x = scaled_layer(torch.float32)
    W, b, A, B = layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B
    assert torch.allclose(layer(x), x @ W.T + b + (6 / 4) * (x @ A.T @ B.T), atol=1e-6, rtol=0)
    assert (layer(x) - (x @ W.T + b)).abs().max() > 0.1          # the update is there
    layer, x = scaled_layer(torch.bfloat16)
    # the base output in bf16, the update in float32, summed in float32 and rounded to bf16 once
    expected = layer.base(x).float() + (6 / 4) * (x.float() @ layer.lora_A.T @ layer.lora_B.T)
    assert layer(x).dtype == torch.bfloat16 and torch.equal(layer(x), expected.to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bf16"])
def test_merge_lora_writes_W_plus_alpha_over_r_times_BA_in_float32(dtype):
    """merge_lora's merged weight is W.float() + (α/r)·B@A by hand (α/r = 6/4), its bias b.float(), both
    float32 whatever the base dtype, and the merged layer is the plain nn.Linear that was adapted."""
    layer, _ = scaled_layer(dtype)
    W, b, A, B = (t.detach().clone() for t in (layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B))
    model = merge_lora(torch.nn.Sequential(layer))
    merged = model[0]
    assert type(merged) is torch.nn.Linear and merged is layer.base
    assert merged.weight.dtype == merged.bias.dtype == torch.float32
    assert torch.allclose(merged.weight, W.float() + (6 / 4) * (B @ A), atol=1e-7, rtol=1e-6)
    assert torch.equal(merged.bias, b.float())
