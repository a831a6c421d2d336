"""An adapter folder: its layout, reading it strictly, and loading its adapters into a stage.

The layout (`zoo.adapters.share` writes it: `python -m zoo lora export|mix`):

    <out>/zoo_adapter.json                       manifest: stages, base fingerprint, rank/alpha, tasks, examples, config
    <out>/README.md                              huggingface_hub ModelCard with the sample images
    <out>/samples/sample_<i>.png                 the example instructions rendered with the adapter (fixed seeds)
    <out>/<stage>/adapter_config.json            peft LoraConfig                 } a plain peft adapter: loads with
    <out>/<stage>/adapter_model.safetensors      peft keys (base_model.model.*)  } PeftModel.from_pretrained(...)
    <out>/<stage>/pytorch_lora_weights.safetensors   optional: diffusers' format (backbone UNet layers, `unet.` keys)

`<stage>` is `base` or `sr` (`stage_name`), as the pipeline names its stages. Wherever a folder is read, a Hub repo
id (`user/name`, `user/name@revision`) may stand for it (`resolve`, through `zoo.hub`). Loading is strict: a missing or
unreadable file is named, zero matching keys fail, any missing or unexpected key fails naming it, and an adapter made
on another base is refused naming both fingerprints (`zoo.lora.fingerprint`). Only safetensors and JSON are read;
nothing is ever unpickled from an adapter folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import set_adapter
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from zoo.hub import resolve_folder
from zoo.lit.sr_module import SuperResolution
from zoo.lora import model_fingerprint

MANIFEST = "zoo_adapter.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before the wrapped model's keys
FORMAT = "zoo-lora/1"


def stage_name(stage: nn.Module) -> str:
    """The stage's folder in an adapter: "sr" for the super-resolution stage, "base" for the base stage."""
    return "sr" if isinstance(stage, SuperResolution) else "base"


# ----------------------------------------------------------------------------------------------------- writing
def write_stage(folder: str | Path, stage: str, state: dict[str, torch.Tensor], config: LoraConfig) -> Path:
    """One stage's peft adapter (keys `base_model.model.`-prefixed, as PeftModel.save_pretrained writes them)."""
    stage_dir = Path(folder) / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, stage_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    config.save_pretrained(str(stage_dir))
    return stage_dir


# ----------------------------------------------------------------------------------------------------- reading
def resolve(folder: str | Path) -> Path:
    """An adapter folder: a local path, or a Hub repo id (`user/name[@revision]`) fetched into the Hub cache."""
    return resolve_folder(str(folder), what="adapter")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{path}: missing (an adapter folder needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        pickled = [p.name for p in path.parent.glob("*.bin")]
        hint = f" ({pickled} found: only safetensors are read, pickled weights never are)" if pickled else ""
        raise ValueError(f"{path}: missing{hint}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path}: corrupt or not a safetensors file ({error})") from error


def read_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such adapter folder")
    manifest = _read_json(folder / MANIFEST)
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("stages"), dict):
        raise ValueError(
            f"{folder / MANIFEST}: not a zoo adapter manifest (format {manifest.get('format')!r}, expected {FORMAT!r})"
        )
    return manifest


def read_stage(folder: str | Path, stage: str) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """One stage's peft config and weights (keys as peft saves them, `base_model.model.`-prefixed)."""
    stage_dir = Path(folder) / stage
    raw = _read_json(stage_dir / CONFIG_FILE)
    try:
        config = LoraConfig.from_peft_type(**raw) if "peft_type" in raw else LoraConfig(**raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{stage_dir / CONFIG_FILE}: not a LoRA adapter config ({error})") from error
    return config, _read_safetensors(stage_dir / WEIGHTS_FILE)


def info(folder: str | Path) -> dict[str, Any]:
    """What an adapter folder holds, from its files alone (the base model is never loaded)."""
    folder = resolve(folder)
    manifest = read_manifest(folder)
    stages = {}
    for stage in manifest["stages"]:
        config = _read_json(folder / stage / CONFIG_FILE)
        weights = folder / stage / WEIGHTS_FILE
        if not weights.is_file():
            raise ValueError(f"{weights}: missing")
        try:
            with safe_open(weights, framework="pt") as file:
                keys = list(file.keys())
                numel = sum(math.prod(file.get_slice(k).get_shape()) for k in keys)
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{weights}: corrupt or not a safetensors file ({error})") from error
        stages[stage] = {
            "rank": config.get("r"),
            "alpha": config.get("lora_alpha"),
            "layers": len({k.split(".lora_")[0] for k in keys}),
            "parameters": numel,
            "bytes": weights.stat().st_size,
            "diffusers_file": (folder / stage / DIFFUSERS_FILE).is_file(),
            "fingerprint": manifest["stages"][stage].get("fingerprint"),
        }
    return {
        "folder": str(folder),
        "stages": stages,
        "tasks": manifest.get("tasks", []),
        "example_instructions": manifest.get("example_instructions", []),
        "weights": manifest.get("weights"),
        "mixed_from": manifest.get("mixed_from"),
        "source_checkpoint": manifest.get("source_checkpoint"),
    }


# ------------------------------------------------------------------------------------------------ strict load
def _adapter_keys(target: nn.Module, name: str, prefix: str) -> dict[str, torch.Size]:
    """Adapter `name`'s keys in `target`, in file form (adapter name removed, `prefix` + wrapped-model key)."""
    marker = f".{name}."
    keys = {}
    for key, value in target.state_dict().items():
        if ".lora_" in key and marker in key:
            file_key = key.replace(marker, ".")
            keys[file_key if file_key.startswith(PEFT_PREFIX) else PEFT_PREFIX + file_key[len(prefix) :]] = value.shape
    return keys


def load_into(
    target: nn.Module, config: LoraConfig, state: dict[str, torch.Tensor], name: str, source: str, inject: bool = True
) -> None:
    """Adds adapter `name` to `target` (an InstructUNet, or a PeftModel around one) and loads its weights strictly.

    Args:
        inject: False when the adapter's layers are already in place (a PeftModel created with this adapter).

    Raises:
        ValueError: naming `source` when no key matches, when keys are missing or unexpected, or shapes differ.
    """
    try:
        if inject and isinstance(target, PeftModel):
            target.add_adapter(name, config)
        elif inject:
            inject_adapter_in_model(config, target, adapter_name=name)
    except ValueError as error:
        raise ValueError(
            f"{source}: its target modules do not exist in this model ({str(error).splitlines()[0]})"
        ) from error
    expected = _adapter_keys(target, name, "")
    matched = set(expected) & set(state)
    if not matched:
        raise ValueError(
            f"{source}: none of its {len(state)} keys match this model's {len(expected)} adapter keys "
            f"(e.g. {sorted(state)[:2]} vs {sorted(expected)[:2]})"
        )
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k])}"
        for k in sorted(matched)
        if state[k].shape != expected[k]
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source}: {len(matched)} keys match, but {len(missing)} are missing {missing[:5]}, {len(unexpected)} are "
            f"unexpected {unexpected[:5]} and {len(shapes)} have other shapes {shapes[:5]}"
        )
    if not isinstance(target, PeftModel):
        state = {k[len(PEFT_PREFIX) :]: v for k, v in state.items()}
    set_peft_model_state_dict(target, state, adapter_name=name)


def check_base(manifest: dict[str, Any], stage: str, model, folder: str | Path) -> None:
    """Refuses an adapter made on another base, naming both fingerprints."""
    theirs = manifest["stages"][stage].get("fingerprint")
    ours = model_fingerprint(model)
    if theirs != ours:
        raise ValueError(
            f"{folder}: the adapter was made for base {theirs} ({manifest.get('base', {})}) but this model's base is "
            f"{ours} (unet={model.hparams.unet!r}, text_encoder={model.hparams.text_encoder!r}); load it onto the "
            "base it was trained on"
        )


def open_stage(spec: str | Path, model) -> tuple[Path, LoraConfig, dict[str, torch.Tensor]]:
    """The adapter folder `spec` (a path or Hub repo id), checked against `model`: it adapts the model's stage and was
    made on its base. Returns the folder, the stage's peft config and its weights."""
    stage = stage_name(model)
    folder = resolve(spec)
    manifest = read_manifest(folder)
    if stage not in manifest["stages"]:
        raise ValueError(f"{folder}: adapts stages {sorted(manifest['stages'])}, not this model's stage {stage!r}")
    check_base(manifest, stage, model, folder)
    return (folder, *read_stage(folder, stage))


def load_adapters(model, adapters: Sequence[tuple[str | Path, float]]) -> list[str]:
    """Loads adapter folders into a stage and activates them together, each scaled by its weight.

    Returns:
        the adapter names in the model (`adapter0`, `adapter1`, ...).
    """
    stage = stage_name(model)
    names = []
    for index, (spec, _) in enumerate(adapters):
        folder, config, state = open_stage(spec, model)
        name = f"adapter{index}"
        load_into(model.lora_root(), config, state, name, str(Path(folder) / stage))
        names.append(name)
    set_adapter(model.lora_root(), names)
    for module in model.lora_root().modules():
        if isinstance(module, LoraLayer):
            for name, (_, weight) in zip(names, adapters):
                module.set_scale(name, weight)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return names
