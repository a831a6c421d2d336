"""LoRA on a cascade stage through peft: which layers adapt (`LoraSpec`), putting the adapters in place, and the base
fingerprint that ties an adapter to the base it was trained on.

The adapters are injected into the `InstructUNet` in place (peft `inject_adapter_in_model`), so the module tree, the
context layers' forward hooks and every checkpoint key keep their names; peft only wraps each targeted `nn.Linear`
(its weight moves to `<name>.base_layer.weight`, the adapter adds `<name>.lora_A.<adapter>.weight` and `lora_B`).

Default targets (`attention`): the q/k/v/out projections of every backbone attention and of the new context layers
(paper §2.3). The context layers must already hold trained weights when LoRA starts (a stage-1 or stage-2 result via
`init_from`): LoRA adapts them, it does not train them from their zero init. Everything that is not an adapter is
frozen, so a LoRA run's trainable parameters are exactly the adapters.

Base fingerprint (`fingerprint`): sha256 over the text encoder spec and, for every tensor of the stage's network
(adapters stripped, sorted by key), its key, shape and float64 sum and absolute sum (6 significant digits). It reads
every weight once (cheap next to loading them), ignores dtype, and changes with any real change of weights or layout.
An adapter folder records it (`zoo.adapters.folder`) and refuses to load onto another base.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")  # diffusers `Attention`: to_out is [Linear, Dropout]
CONTEXT = ("to_q", "to_k", "to_v", "to_out", "proj")  # `ContextCrossAttention`; `ContextPooling`'s projection
MLP = ("ff.net.0.proj", "ff.net.2")  # diffusers `FeedForward` (GEGLU projection, output)

# Named target sets: module-name predicates over the InstructUNet's names (unet.* / context_layers.*).
TARGET_SETS: dict[str, str] = {
    "attention": "backbone attention q/k/v/out + context-layer q/k/v/out and pooled projection (default)",
    "context": "context-layer q/k/v/out and pooled projection only",
    "backbone-attention": "backbone attention q/k/v/out only",
    "attention-mlp": "`attention` plus the transformer blocks' feed-forward layers",
}


@dataclass
class LoraSpec:
    """What LoRA adapts and how (peft `LoraConfig` fields under project names).

    Args:
        rank: r, the adapter's inner width.
        alpha: lora_alpha; the update is scaled by alpha / rank.
        dropout: dropout on the adapter's input.
        targets: a named set (`attention`, `context`, `backbone-attention`, `attention-mlp`) or module names; a name
            matches a module whose full name equals it or ends with `.<name>` (peft's rule).
        init: peft `init_lora_weights` (True: Kaiming A, zero B, so training starts at the base model; or "gaussian").
    """

    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: str | list[str] = "attention"
    init: bool | str = True
    extra: dict[str, Any] = field(default_factory=dict)  # any other LoraConfig field, e.g. {"use_rslora": true}

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora.rank must be ≥ 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.targets, str) and self.targets not in TARGET_SETS:
            raise ValueError(
                f"lora.targets: unknown target set {self.targets!r}; named sets: {sorted(TARGET_SETS)} "
                "(or a list of module names)"
            )

    @classmethod
    def coerce(cls, value: LoraSpec | dict[str, Any] | None) -> LoraSpec | None:
        """A spec from YAML (already a LoraSpec) or from a checkpoint's hyperparameters (a plain dict)."""
        if value is None or isinstance(value, LoraSpec):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"lora must be a LoraSpec or a dict, got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _in_set(name: str, target_set: str) -> bool:
    in_context = name.startswith("context_layers.")
    if in_context:
        return target_set in ("attention", "context", "attention-mlp") and name.endswith(
            tuple("." + s for s in CONTEXT)
        )
    if target_set == "context":
        return False
    suffixes = ATTENTION + (MLP if target_set == "attention-mlp" else ())
    return name.endswith(tuple("." + s for s in suffixes))


def resolve_targets(model: nn.Module, targets: str | list[str]) -> list[str]:
    """Full names of the `nn.Linear` modules a target set or name list selects.

    Raises:
        ValueError: for a name that matches no module, listing the closest module names.
    """
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if isinstance(targets, str):
        names = [name for name in linear if _in_set(name, targets)]
        if not names:
            raise ValueError(f"lora.targets {targets!r} selects no layer of this model")
        return names
    # every dotted suffix of every module name, so a short target ("to_qq") is compared with short names ("to_q")
    suffixes = sorted(
        {
            ".".join(parts[i:])
            for name, _ in model.named_modules()
            if name
            for parts in [name.split(".")]
            for i in range(len(parts))
        }
    )
    selected: list[str] = []
    for target in targets:
        matches = [name for name in linear if name == target or name.endswith("." + target)]
        if not matches:
            closest = difflib.get_close_matches(target, suffixes, n=5, cutoff=0.6) or difflib.get_close_matches(
                target, suffixes, n=5, cutoff=0.0
            )
            raise ValueError(
                f"lora.targets: {target!r} matches no linear layer of the model; closest module names: {closest} "
                "(a target matches a module whose name equals it or ends with '.<target>')"
            )
        selected += [name for name in matches if name not in selected]
    return selected


def lora_config(model: nn.Module, spec: LoraSpec) -> LoraConfig:
    """The peft config for `spec` on `model`, with targets resolved to full module names (so it is reproducible)."""
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=resolve_targets(model, spec.targets),
        init_lora_weights=spec.init,
        **spec.extra,
    )


def apply_lora(model: nn.Module, spec: LoraSpec, adapter_name: str = "default") -> LoraConfig:
    """Injects LoRA adapters into `model` in place and freezes everything else. Returns the peft config used."""
    config = lora_config(model, spec)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    inject_adapter_in_model(config, model, adapter_name=adapter_name)
    return config


def count_lora_layers(model: nn.Module) -> int:
    return sum(isinstance(module, BaseTunerLayer) for module in model.modules())


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def base_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """A LoRA model's state without the adapters and with peft's `.base_layer` removed: the base model's keys."""
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}


def fingerprint(state: dict[str, torch.Tensor], text_encoder: str | dict[str, Any]) -> str:
    """The base fingerprint of a stage network's (adapter-free) state and its text encoder spec."""
    digest = hashlib.sha256(json.dumps(text_encoder, sort_keys=True, default=str).encode())
    for key in sorted(state):
        t = state[key].detach().to("cpu", torch.float64)
        digest.update(f"{key}:{tuple(t.shape)}:{t.sum().item():.6e}:{t.abs().sum().item():.6e};".encode())
    return digest.hexdigest()[:16]


def model_fingerprint(stage: nn.Module) -> str:
    """The base fingerprint of a stage (its network, any adapters in it ignored, and its text encoder spec)."""
    return fingerprint(base_state_dict(stage.model.state_dict()), stage.hparams.text_encoder)
