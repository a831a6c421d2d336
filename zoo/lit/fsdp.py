"""FSDP for zoo stages: a wrap policy that keeps frozen and trainable (LoRA) parameters in separate units, and a
strategy that saves only the adapters of a LoRA run.

FSDP flattens each wrapped unit's parameters into one buffer; a unit that mixes frozen and trainable parameters
keeps gradients and optimizer state for the frozen ones too (or, with `use_orig_params=False`, refuses outright).
So every trainable leaf (a LoRA `lora_A`/`lora_B` linear, or any leaf whose own parameters all train) is its own
unit, and the transformer, ResNet and context blocks are units around what is left — frozen weights only in a LoRA
run. Use it from a recipe:

    trainer:
      strategy: fsdp_lora          # registered in Lightning's StrategyRegistry below, like "ddp" or "fsdp"; or:
      # strategy: {class_path: zoo.lit.fsdp.FSDPStrategyForLoRA}

(A dotted class name as a plain string, `strategy: zoo.lit.fsdp.FSDPStrategyForLoRA`, does not work: the Trainer's
`strategy` accepts any string, so Lightning receives it as a strategy *name* and refuses it.)

Lightning's EMAWeightAveraging does not support sharded models; leave EMA out of FSDP runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry
from torch import nn
from torch.distributed.fsdp._common_utils import clean_tensor_name
from torch.distributed.fsdp.wrap import CustomPolicy

from zoo.checkpoint_io import load_checkpoint
from zoo.models.instruct_unet import ContextCrossAttention

BLOCKS: tuple[type[nn.Module], ...] = (BasicTransformerBlock, ResnetBlock2D, ContextCrossAttention)


def is_trainable_leaf(module: nn.Module) -> bool:
    """A module without children whose own parameters all train (a LoRA A/B linear in a LoRA run)."""
    own = list(module.parameters(recurse=False))
    return not list(module.children()) and bool(own) and all(p.requires_grad for p in own)


class LoraWrapPolicy(CustomPolicy):
    """Wraps every trainable leaf and every block (`BLOCKS`) as an FSDP unit; the root takes the rest."""

    def __init__(self) -> None:
        super().__init__(lambda module: is_trainable_leaf(module) or isinstance(module, BLOCKS))


class FSDPStrategyForLoRA(FSDPStrategy):
    """`FSDPStrategy` with `LoraWrapPolicy` and `use_orig_params=True`; in a LoRA run, checkpoints hold only the
    adapter weights, and resuming keeps the frozen base the model already loaded from `model.init_from`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("auto_wrap_policy", LoraWrapPolicy())
        kwargs.setdefault("use_orig_params", True)
        super().__init__(**kwargs)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        state = super().lightning_module_state_dict()
        if getattr(self.lightning_module, "lora_config", None) is None:
            return state
        return adapter_only(state)

    def load_checkpoint(self, checkpoint_path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
        """Resume. FSDP loads a full checkpoint's weights itself, strictly and before any hook runs, but zoo
        checkpoints leave out frozen weights: the text encoder always (rebuilt from its source) and, in a LoRA run,
        the whole base (it comes from `init_from` again). So the file's keys are checked here — only frozen weights
        may be missing, nothing may be unexpected — and FSDP then loads it non-strictly; the frozen weights already
        in the model stay. The weights are then loaded, so `on_load_checkpoint` sees no `state_dict`."""
        path = Path(checkpoint_path)
        module = self.lightning_module
        if not path.is_file() or module is None:  # a sharded checkpoint (a folder) holds every key: FSDP as is
            return super().load_checkpoint(checkpoint_path, weights_only)
        # Read weights-only (tensor data memory-mapped, not loaded) before FSDP reads the file with Lightning's lazy
        # unpickler, which would build any object a malicious file holds.
        saved = set(load_checkpoint(path, "--ckpt_path", mmap=True)["state_dict"])
        # local names only (no gathering): with use_orig_params, FSDP keeps the original parameters under its prefixes
        parameters = list(module.named_parameters())
        trainable = {clean_tensor_name(name) for name, p in parameters if p.requires_grad}
        known = {clean_tensor_name(name) for name, _ in [*parameters, *module.named_buffers()]}
        missing, unexpected = sorted(trainable - saved), sorted(saved - known)
        if missing or unexpected:
            more = lambda keys: " …" if len(keys) > 10 else ""  # noqa: E731
            raise ValueError(
                f"checkpoint {path} does not fit this model: missing trainable keys {missing[:10]}{more(missing)}; "
                f"unexpected keys {unexpected[:10]}{more(unexpected)}"
            )
        strict = module.strict_loading
        module.strict_loading = False
        try:
            return super().load_checkpoint(checkpoint_path, weights_only)
        finally:
            module.strict_loading = strict


def adapter_only(state: dict[str, Any]) -> dict[str, Any]:
    """The LoRA entries of a state dict."""
    return {k: v for k, v in state.items() if ".lora_" in k}


# `--trainer.strategy fsdp_lora`, listed with Lightning's own strategies (`zoo.commands.train` imports this module).
if "fsdp_lora" not in StrategyRegistry:
    StrategyRegistry.register(
        "fsdp_lora",
        FSDPStrategyForLoRA,
        description="FSDP with frozen and LoRA parameters in separate units; LoRA runs save adapters only",
    )
