"""LoRA: low-rank adapters over a frozen model (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
Language Models", arXiv:2106.09685).

A linear layer y = x Wᵀ + b, W ∈ R^{out×in}, is adapted as
    W' = W + (α/r) · B A,        A ∈ R^{r×in},  B ∈ R^{out×r},  r ≪ min(in, out)
    y' = base(x) + (α/r) · dropout(x) Aᵀ Bᵀ
and only A and B are trained: r·(in + out) numbers instead of in·out. A is initialised like an
nn.Linear weight (kaiming-uniform, a = √5) and B to zeros, so BA = 0 and the adapted model starts
equal to the base model. The base weights stay frozen in their dtype (e.g. bf16); A and B are float32
and so is the adapter path, cast back to the base output's dtype.

Switched off (`adapters_disabled`, `AdaptersOff`), every adapted layer returns its base output exactly:
the model is then the original model, which serves as the frozen reference without a second copy.
`merge_lora` folds (α/r)·BA into W in float32, leaving a plain model that `save_pretrained` writes as
usual: an update smaller than half a bf16 step of W (the size of an update at the learning rates of
billion-weight models) survives, where W + ΔW stored in bf16 would round most of it away.
`save_adapters` writes the adapters alone, which `load_adapters` applies, unmerged, to their base model.
"""
import json
import math
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from helpers.cli import DareuError


@dataclass
class LoraConfig:
    rank: int = 16               # r, rank of the update B·A
    alpha: float = 32.0          # α: the update is scaled by α / r
    dropout: float = 0.0         # dropout on the adapters' input in training mode (DareU's loops never use it)
    targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # the nn.Linear to adapt, by last name
    merge: bool = True           # save the merged model (a plain folder); false: the adapters alone

    def target_names(self):
        return {name.strip() for name in self.targets.split(",") if name.strip()}


# what each --lora-* flag accepts, checked where the flags are parsed (helpers/cli.py)
LORA_CHECKS = dict(rank=">= 1", alpha="> 0", dropout="in [0, 1)", targets="a comma-separated list of names")


class LoraLinear(nn.Module):
    """A frozen nn.Linear `base` plus the trainable float32 update (α/r)·B·A."""

    def __init__(self, base: nn.Linear, cfg: LoraConfig):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scale = cfg.alpha / cfg.rank
        self.dropout = nn.Dropout(cfg.dropout)
        where = dict(device=base.weight.device, dtype=torch.float32)
        self.lora_A = nn.Parameter(torch.empty(cfg.rank, base.in_features, **where))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, cfg.rank, **where))
        self.enabled = True      # False: the base output, exactly
        self.train(base.training)    # in the mode of the model it joins (dropout off in eval)

    def forward(self, x):
        out = self.base(x)
        if not self.enabled:
            return out
        update = self.dropout(x.float()) @ self.lora_A.T @ self.lora_B.T
        return (out.float() + self.scale * update).to(out.dtype)


def lora_layers(model):
    return [m for m in model.modules() if isinstance(m, LoraLinear)]


def lora_parameters(model):
    """The adapters' parameters A and B: all that is trained."""
    return [p for layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B)]


def add_lora(model, cfg: LoraConfig):
    """Freeze every parameter of `model` and wrap, in place, each nn.Linear whose name ends in one of
    cfg.targets in a LoraLinear. Returns the adapters' parameters (for the optimizer)."""
    targets = cfg.target_names()
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    matched = {name: m for name, m in linears.items() if name.rpartition(".")[2] in targets}
    if not matched:
        kinds = sorted({name.rpartition(".")[2] for name in linears})
        raise DareuError(f"--lora-targets {cfg.targets!r} match none of the model's nn.Linear, "
                         f"whose names end in: {', '.join(kinds[:12])}")
    output_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    model.requires_grad_(False)
    for name, module in matched.items():
        if module is output_layer:
            raise DareuError(f"--lora-targets: {name} is the output layer, which is never adapted")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, LoraLinear(module, cfg))
    model.lora_config = cfg
    return lora_parameters(model)


@contextmanager
def adapters_disabled(model):
    """Within it, every LoraLinear of `model` returns its base output exactly: the model is the base model."""
    layers = lora_layers(model)
    were_enabled = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer, enabled in zip(layers, were_enabled):
            layer.enabled = enabled


class AdaptersOff:
    """The base model inside an adapted `model`, called like a model (the frozen reference of DareU's KL
    and retain distillation): every call runs `model` with its adapters off. No second copy."""

    def __init__(self, model):
        self.model = model
        self.device = model.device

    def __call__(self, *args, **kwargs):
        with adapters_disabled(self.model):
            return self.model(*args, **kwargs)


@torch.no_grad()
def merge_lora(model):
    """Replace, in place, each LoraLinear by its base nn.Linear with the float32 weight W + (α/r)·B·A
    (and a float32 bias). Returns `model`, a plain model with the base model's parameter names (still
    frozen); the layers that were adapted are float32, the others keep their dtype."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLinear):
            base = module.base
            base.weight = nn.Parameter(base.weight.float() + module.scale * (module.lora_B @ module.lora_A),
                                       requires_grad=False)
            if base.bias is not None:
                base.bias = nn.Parameter(base.bias.float(), requires_grad=False)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.base)
    return model


def lora_state_dict(model):
    """The adapters alone: {name: tensor} for every A and B, to save or to load back with load_lora_state_dict."""
    return {k: v for k, v in model.state_dict().items() if k.rpartition(".")[2] in ("lora_A", "lora_B")}


def load_lora_state_dict(model, state):
    """Load adapters saved by lora_state_dict into a model prepared by add_lora with the same config."""
    expected = lora_state_dict(model).keys()
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise DareuError(f"LoRA state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.load_state_dict(state, strict=False)


def save_adapters(model, folder, base, cfg):
    """The adapters alone into `folder`: adapters.safetensors and lora.json (the config and the `base`
    model folder they apply to; models.load_model loads such a folder as base + adapters)."""
    from safetensors.torch import save_file
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in lora_state_dict(model).items()}, os.path.join(folder, "adapters.safetensors"))
    with open(os.path.join(folder, "lora.json"), "w", encoding="utf-8") as f:
        json.dump({"base": os.path.abspath(base), **asdict(cfg)}, f, indent=2)


def load_adapters(model, folder):
    """Apply the adapters saved in `folder` to `model` (its base), unmerged and frozen: the model computes
    exactly what the adapted model computed when it was saved. Returns the model."""
    from safetensors.torch import load_file
    with open(os.path.join(folder, "lora.json"), encoding="utf-8") as f:
        meta = json.load(f)
    add_lora(model, LoraConfig(**{k: v for k, v in meta.items() if k != "base"}))
    load_lora_state_dict(model, load_file(os.path.join(folder, "adapters.safetensors")))
    return model.requires_grad_(False)
