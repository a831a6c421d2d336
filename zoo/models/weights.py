"""Weights for `--model.init_from`: a Lightning checkpoint or a diffusers UNet folder, checked key by key.

Accepted sources:
- a Lightning `.ckpt` (read with `zoo.checkpoint_io`: tensors and plain containers only; its EMA weights when the
  run kept them, as everywhere a checkpoint is read);
- a diffusers UNet folder (`config.json` + `diffusion_pytorch_model[.fp16].safetensors`, or a sharded
  `...safetensors.index.json`), e.g. `IF-I-XL-v1.0/unet`, or a pipeline folder holding `unet/`;
- a zoo pipeline folder (`python -m zoo export`, e.g. a model shipped in `checkpoints/`): its base stage's UNet and,
  when present, its context layers (`base/context_layers.safetensors`);
- a bare `.safetensors` file of UNet weights (diffusers key names).
Weights are read from safetensors only: a folder with `.bin` files alone is refused (pickles can run code).

The check: the new context layers (and a text encoder's weights, rebuilt from its own source) are the only keys
allowed to be missing; an unexpected key, any other missing key or a shape mismatch is a ValueError that lists the
keys with both shapes. A diffusers folder's `config.json` is compared with the backbone's config first, field by
field, so a preset that does not describe the folder fails with the differing fields named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from zoo.checkpoint_io import load_checkpoint, stage_weights
from zoo.models.instruct_unet import REFINER
from zoo.models.presets import diffusers_config_file, read_diffusers_config

# Where the backbone and the new context layers sit in the base stage's state dict (the SR stage passes its own).
UNET_PREFIX = "model.unet."
CONTEXT_PREFIX = "model.context_layers."
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
INDEX_NAMES = ("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.fp16.safetensors.index.json")
SHOWN = 20  # keys listed per kind in an error message


@dataclass
class LoadReport:
    """What `init_from` loaded: `kind` is "lightning", "diffusers" or "safetensors"."""

    source: str
    kind: str
    loaded: int
    new_keys: list[str] = field(default_factory=list)
    context_prefix: str = CONTEXT_PREFIX

    def summary(self) -> str:
        layers = sorted({key[len(self.context_prefix) :].split(".")[0] for key in self.new_keys})
        return (
            f"init_from {self.source} ({self.kind}): loaded {self.loaded} tensors; not in the source, as expected: "
            f"{len(layers)} new context layers ({len(self.new_keys)} tensors, zero-initialised output)"
        )


def _listing(items: list[str]) -> str:
    more = f" … and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


def _diffusers_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return load_file(str(folder / name))
    for name in INDEX_NAMES:
        if (folder / name).is_file():
            shards = sorted(set(json.loads((folder / name).read_text(encoding="utf-8"))["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(str(folder / shard)))
            return state
    pickles = sorted(p.name for p in folder.glob("*.bin"))
    hint = (
        f" (found {pickles}: pickle files are never loaded; "
        "convert them with diffusers' save_pretrained(safe_serialization=True))"
        if pickles
        else ""
    )
    raise ValueError(f"init_from {folder}: no diffusion_pytorch_model.safetensors here{hint}")


def compare_configs(folder_config: dict, unet_config: dict, source: str) -> None:
    """Raises ValueError naming every field where the folder's config.json and the backbone's config differ."""

    def normal(value):  # tuples and lists compare equal, as they do after a JSON round trip
        return json.loads(json.dumps(value))

    differ = [
        f"{key}: folder {normal(value)!r} vs model {normal(unet_config[key])!r}"
        for key, value in sorted(folder_config.items())
        if key in unet_config and normal(value) != normal(unet_config[key])
    ]
    if differ:
        raise ValueError(
            f"init_from {source}: its config.json does not describe the chosen backbone; differing fields: "
            f"{_listing(differ)}. Use --model.unet {source} to build the backbone from the folder's own config"
        )


def read_source(
    path: str, unet_config: dict, unet_prefix: str = UNET_PREFIX, context_prefix: str = CONTEXT_PREFIX
) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of `path`, keyed as the stage's own state dict (UNet keys under `unet_prefix`), and its kind."""
    source = Path(path)
    if source.is_dir():
        config_file = diffusers_config_file(source)
        if config_file is None:
            raise ValueError(
                f"init_from {path}: a folder without config.json or unet/config.json; give a diffusers UNet folder"
            )
        compare_configs(read_diffusers_config(config_file.parent), unet_config, path)
        state = {unet_prefix + key: value for key, value in _diffusers_weights(config_file.parent).items()}
        # A zoo pipeline keeps the stage's context layers beside its unet/ (zoo.pipeline.CONTEXT_LAYERS).
        context_file = config_file.parent.parent / "context_layers.safetensors"
        if context_file.is_file():
            state |= {context_prefix + key: value for key, value in load_file(str(context_file)).items()}
        return state, "diffusers"
    if not source.is_file():
        raise ValueError(f"init_from: {path} does not exist")
    if source.suffix == ".safetensors":
        return {unet_prefix + key: value for key, value in load_file(str(source)).items()}, "safetensors"
    checkpoint = load_checkpoint(source, "init_from")
    return (stage_weights(checkpoint) if "state_dict" in checkpoint else checkpoint), "lightning"


def load_weights(
    module: torch.nn.Module,
    path: str,
    unet_config: dict,
    unet_prefix: str = UNET_PREFIX,
    context_prefix: str = CONTEXT_PREFIX,
) -> LoadReport:
    """Loads `path` into `module` (a stage: InstructImagen or SuperResolution) after checking every key and shape.

    Args:
        unet_prefix, context_prefix: where the backbone's and the new context layers' keys sit in the stage.

    Raises:
        ValueError: listing unexpected keys, missing keys other than the new context layers, and mismatched shapes.
    """
    state, kind = read_source(path, unet_config, unet_prefix, context_prefix)
    own = module.state_dict()
    allowed_missing = (context_prefix, "text_encoder.")
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.startswith(allowed_missing))
    if shapes or unexpected or missing:
        parts = [f"{len(shapes)} mismatched shapes: {_listing(shapes)}" if shapes else ""]
        parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}" if unexpected else "")
        parts.append(f"{len(missing)} missing keys: {_listing(missing)}" if missing else "")
        layers = {k.split(f"{REFINER}.layers.")[1].split(".")[0] for k in unexpected if f"{REFINER}.layers." in k}
        if layers:  # the commonest case by far: a base trained with `text_refiner`, loaded without it
            parts.append(f"the source has a {len(layers)}-layer text refiner: set model.text_refiner {len(layers)}")
        raise ValueError(f"init_from {path} does not fit this model — " + " | ".join(p for p in parts if p))
    module.load_state_dict(state, strict=False)
    new_keys = sorted(k for k in set(own) - set(state) if k.startswith(context_prefix))
    return LoadReport(path, kind, len(state), new_keys, context_prefix)
