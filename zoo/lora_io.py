"""Shareable LoRA adapters: export from a checkpoint, strict loading, info, weighted mixing and merging.

An adapter folder (what `python -m zoo lora export` writes):

    <out>/zoo_adapter.json                       manifest: stages, base fingerprint, rank/alpha, tasks, examples, config
    <out>/README.md                              huggingface_hub ModelCard with the sample images
    <out>/samples/sample_<i>.png                 the example instructions rendered with the adapter (fixed seeds)
    <out>/<stage>/adapter_config.json            peft LoraConfig                 } a plain peft adapter: loads with
    <out>/<stage>/adapter_model.safetensors      peft keys (base_model.model.*)  } PeftModel.from_pretrained(...)
    <out>/<stage>/pytorch_lora_weights.safetensors   optional: diffusers' format (backbone UNet layers, `unet.` keys)

Loading is strict: a missing or unreadable file is named, zero matching keys fail, any missing or unexpected key
fails naming it, and an adapter made on another base is refused naming both fingerprints. Only safetensors and
JSON are read; nothing is ever unpickled from an adapter folder.

Base fingerprint: sha256 over the text encoder spec and, for every tensor of the stage's network (adapters
stripped, sorted by key), its key, shape and float64 sum and absolute sum (6 significant digits). It reads every
weight once (cheap next to loading them), ignores dtype, and changes with any real change of weights or layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from peft import LoraConfig, PeftModel, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import set_adapter
from peft.utils import get_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from zoo.checkpoint_io import load_checkpoint
from zoo.lora import base_state_dict

MANIFEST = "zoo_adapter.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before the wrapped model's keys
FORMAT = "zoo-lora/1"


# ------------------------------------------------------------------------------------------------ fingerprints
def fingerprint(state: dict[str, torch.Tensor], text_encoder: str | dict[str, Any]) -> str:
    """The base fingerprint of a stage network's (adapter-free) state and its text encoder spec."""
    digest = hashlib.sha256(json.dumps(text_encoder, sort_keys=True, default=str).encode())
    for key in sorted(state):
        t = state[key].detach().to("cpu", torch.float64)
        digest.update(f"{key}:{tuple(t.shape)}:{t.sum().item():.6e}:{t.abs().sum().item():.6e};".encode())
    return digest.hexdigest()[:16]


def model_fingerprint(model) -> str:
    """Fingerprint of an `InstructImagen`'s base stage network (any adapters in it ignored)."""
    return fingerprint(base_state_dict(model.model.state_dict()), model.hparams.text_encoder)


def stage_name(model) -> str:
    return getattr(model.hparams, "stage", None) or "base"


# ------------------------------------------------------------------------------------------- checkpoint access
def model_from_checkpoint(path: str | Path, weights: str = "ema", with_lora: bool = True):
    """An `InstructImagen` rebuilt from a checkpoint's hyperparameters and weights.

    Args:
        weights: "ema" reads `state_dict` (the averaged weights when EMAWeightAveraging ran), "live" reads the
            non-averaged `current_model_state` when there is one.
        with_lora: False builds the base model only (adapters in the checkpoint dropped, `.base_layer` keys renamed).
    """
    from zoo.lit.module import InstructImagen

    checkpoint = load_checkpoint(path)
    hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
    if not hparams:
        raise ValueError(f"{path}: no hyper_parameters; not a checkpoint written by `python -m zoo fit`")
    hparams["init_from"] = None
    if not with_lora:
        hparams["lora"] = None
    live = checkpoint.get("current_model_state")
    state = live if weights == "live" and live is not None else checkpoint["state_dict"]
    if live is not None and checkpoint["hyper_parameters"].get("lora"):
        # A LoRA run trains its adapters only, so its live base weights are the ones it started from; checkpoints
        # written before zoo.lit.module.keep_frozen_weights_out_of_the_average hold an EMA-drifted base copy.
        state = {k: v if ".lora_" in k else live.get(k, v) for k, v in state.items()}
    model = InstructImagen(**hparams)
    if not with_lora:
        state = base_state_dict(state)
    state = dict(state)
    model.on_load_checkpoint({"state_dict": state})  # adds a pretrained text encoder's weights; checks every key
    model.load_state_dict(state)
    model.eval()
    return model, checkpoint


def save_weights_checkpoint(model, path: Path) -> Path:
    """A weights-only checkpoint that `--model.init_from` and `InstructImagen.load_from_checkpoint` read (atomic)."""
    from lightning import __version__

    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": __version__,
    }
    model.on_save_checkpoint(checkpoint)
    checkpoint.pop("zoo_rng_state", None)
    checkpoint.pop("zoo_nonfinite", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save(checkpoint, tmp)
    os.replace(tmp.name, path)
    return path


# --------------------------------------------------------------------------------------------- reading folders
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
    folder = Path(folder)
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
                numel = sum(_prod(file.get_slice(k).get_shape()) for k in keys)
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


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


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


def load_adapters(model, adapters: Sequence[tuple[str | Path, float]]) -> list[str]:
    """Loads adapter folders into an `InstructImagen` and activates them together, each scaled by its weight.

    Returns:
        the adapter names in the model (`adapter0`, `adapter1`, ...).
    """
    stage = stage_name(model)
    names = []
    for index, (folder, weight) in enumerate(adapters):
        manifest = read_manifest(folder)
        if stage not in manifest["stages"]:
            raise ValueError(f"{folder}: adapts stages {sorted(manifest['stages'])}, not this model's stage {stage!r}")
        check_base(manifest, stage, model, folder)
        config, state = read_stage(folder, stage)
        name = f"adapter{index}"
        load_into(model.model, config, state, name, str(Path(folder) / stage))
        names.append(name)
    set_adapter(model.model, names)
    for module in model.model.modules():
        if isinstance(module, LoraLayer):
            for name, (_, weight) in zip(names, adapters):
                module.set_scale(name, weight)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return names


# ----------------------------------------------------------------------------------------------------- export
def _run_config(checkpoint_path: Path) -> dict[str, Any] | None:
    """The resolved LightningCLI config saved next to the run (`<run>/config.yaml`), if the checkpoint is in a run."""
    for folder in (checkpoint_path.parent, checkpoint_path.parent.parent):
        if (folder / "config.yaml").is_file():
            return yaml.safe_load((folder / "config.yaml").read_text())
    return None


def _example_instructions(config: dict[str, Any] | None, count: int) -> list:
    """Up to `count` held-out instructions (the last example of each task, in turn) of the run's tasks."""
    import importlib

    if not config or count <= 0:
        return []
    tasks = []
    for spec in (config.get("data") or {}).get("tasks") or []:
        module, _, name = spec["class_path"].rpartition(".")
        tasks.append(getattr(importlib.import_module(module), name)(**(spec.get("init_args") or {})))
    examples = []
    for depth in range(count):
        for task in tasks:
            if len(examples) < count and len(task) > depth:
                examples.append(task[len(task) - 1 - depth])
    return examples


def _model_card(manifest: dict[str, Any], samples: list[str]) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        library_name="peft", license="apache-2.0", tags=["lora", "zoo", "instruct-imagen", "text-to-image"]
    )
    stages = "\n".join(
        f"| {name} | {s['rank']} | {s['alpha']} | {s['layers']} | `{s['fingerprint']}` |"
        for name, s in manifest["stages"].items()
    )
    examples = "\n".join(f"- {text}" for text in manifest.get("example_instructions", [])) or "- (none recorded)"
    images = "\n".join(f"![sample {i}]({path})" for i, path in enumerate(samples)) or "(no samples rendered)"
    tasks = ", ".join(manifest.get("tasks", [])) or "n/a"
    source = f"`{manifest.get('source_checkpoint')}` at step {manifest.get('global_step')}"
    content = f"""---
{data.to_yaml()}
---

# zoo LoRA adapter

LoRA adapter(s) for a zoo Instruct-Imagen model (arXiv 2401.01952), trained on tasks: {tasks}.

| stage | rank | alpha | layers | base fingerprint |
|---|---|---|---|---|
{stages}

Weights: {manifest.get("weights")} weights of {source}.

## Use

```bash
python -m zoo lora info .
python -m zoo generate "<instruction>" --ckpt BASE.ckpt --adapter .:1.0
python -m zoo lora merge . --base BASE.ckpt --out merged.ckpt
```

The adapter loads only onto the base whose fingerprint is shown above.

## Example instructions

{examples}

## Samples (fixed seeds)

{images}
"""
    return str(ModelCard(content))


def export(
    ckpt: str | Path,
    out: str | Path,
    weights: str = "ema",
    diffusers: bool = False,
    num_samples: int = 4,
    sample_steps: int | None = None,
) -> Path:
    """Writes an adapter folder from a LoRA training checkpoint (see the module docstring for the layout)."""
    from zoo.grid import to_pil

    ckpt, out = Path(ckpt), Path(out)
    model, checkpoint = model_from_checkpoint(ckpt, weights)
    if model.lora_config is None:
        raise ValueError(f"{ckpt}: trained without LoRA (model.lora is null); there is no adapter to export")
    stage = stage_name(model)
    stage_dir = out / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    # 1. the peft adapter, exactly as PeftModel(InstructUNet).save_pretrained would write it
    state = {PEFT_PREFIX + k: v.contiguous() for k, v in get_peft_model_state_dict(model.model).items()}
    save_file(state, stage_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    model.lora_config.save_pretrained(str(stage_dir))
    # 2. optionally diffusers' single file: the backbone UNet's layers with `unet.` keys (context layers are zoo's own)
    if diffusers:
        unet_state = {k[len(PEFT_PREFIX) :]: v for k, v in state.items() if k.startswith(PEFT_PREFIX + "unet.")}
        config = model.lora_config.to_dict()
        config["target_modules"] = sorted({k[len("unet.") :].split(".lora_")[0] for k in unet_state})
        metadata = {
            "format": "pt",
            "lora_adapter_metadata": json.dumps(
                {k: list(v) if isinstance(v, set) else v for k, v in config.items()}, default=str
            ),
        }
        save_file(unet_state, stage_dir / DIFFUSERS_FILE, metadata=metadata)
    # 3. manifest, run config, samples and card
    config = _run_config(ckpt)
    examples = _example_instructions(config, num_samples)
    manifest = {
        "format": FORMAT,
        "stages": {
            stage: {
                "folder": stage,
                "fingerprint": model_fingerprint(model),
                "rank": model.lora_config.r,
                "alpha": model.lora_config.lora_alpha,
                "layers": len({k.split(".lora_")[0] for k in state}),
            }
        },
        "base": {
            "unet": model.hparams.unet,
            "text_encoder": model.hparams.text_encoder,
            "image_size": model.hparams.image_size,
        },
        "tasks": sorted({spec["class_path"] for spec in ((config or {}).get("data") or {}).get("tasks") or []}),
        "example_instructions": [e.text for e in examples],
        "weights": "ema" if weights == "ema" and "current_model_state" in checkpoint else "live",
        "source_checkpoint": str(ckpt),
        "global_step": checkpoint.get("global_step"),
        "lora": model.hparams.lora,
        "config": config,
    }
    samples = []
    if examples:
        (out / "samples").mkdir(exist_ok=True)
        images = model.generate(examples, sample_steps, seed=0)
        for i, image in enumerate(images):
            to_pil(image).save(out / "samples" / f"sample_{i}.png")
            samples.append(f"samples/sample_{i}.png")
    if config is not None:
        (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    (out / "README.md").write_text(_model_card(manifest, samples), encoding="utf-8")
    return out


# -------------------------------------------------------------------------------------------------------- mix
def mix(adapters: Sequence[tuple[str | Path, float]], out: str | Path, combination_type: str = "cat") -> Path:
    """A weighted combination of adapters made on the same base, through peft's `add_weighted_adapter`.

    `cat` (default) stacks the adapters (rank = sum of ranks): its update is exactly Σ wᵢ·Bᵢ·Aᵢ·scaleᵢ. `linear`
    averages A and B separately (rank kept; needs equal ranks) and is only an approximation (cross terms).
    """
    from diffusers import UNet2DConditionModel

    from zoo.models.instruct_unet import InstructUNet
    from zoo.models.presets import resolve_unet_config

    if len(adapters) < 2:
        raise ValueError("lora mix needs at least two adapters (DIR:WEIGHT ...)")
    manifests = [read_manifest(folder) for folder, _ in adapters]
    first = manifests[0]
    out = Path(out)
    mixed_stages = {}
    for stage in first["stages"]:
        for (folder, _), manifest in zip(adapters, manifests):
            if stage not in manifest["stages"]:
                raise ValueError(f"{folder}: has no stage {stage!r} (the first adapter has {sorted(first['stages'])})")
            if manifest["stages"][stage]["fingerprint"] != first["stages"][stage]["fingerprint"]:
                raise ValueError(
                    f"{folder}: made on base {manifest['stages'][stage]['fingerprint']}, but {adapters[0][0]} on base "
                    f"{first['stages'][stage]['fingerprint']}; only adapters of the same base can be mixed"
                )
        # the adapters' layers only need the network's shapes: a freshly built skeleton of the same config does
        skeleton = InstructUNet(UNet2DConditionModel(**resolve_unet_config(first["base"]["unet"])))
        names = [f"adapter{i}" for i in range(len(adapters))]
        peft_model = None
        for name, (folder, _) in zip(names, adapters):
            config, state = read_stage(folder, stage)
            first_adapter = peft_model is None
            peft_model = PeftModel(skeleton, config, adapter_name=name) if first_adapter else peft_model
            load_into(peft_model, config, state, name, str(Path(folder) / stage), inject=not first_adapter)
        try:
            peft_model.base_model.add_weighted_adapter(
                names, [w for _, w in adapters], "mixed", combination_type=combination_type
            )
        except ValueError as error:
            raise ValueError(f"lora mix --combination {combination_type}: {error}") from error
        stage_dir = out / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in get_peft_model_state_dict(peft_model, adapter_name="mixed").items()}
        save_file(state, stage_dir / WEIGHTS_FILE, metadata={"format": "pt"})
        mixed_config = peft_model.peft_config["mixed"]
        mixed_config.save_pretrained(str(stage_dir))
        mixed_stages[stage] = {
            **first["stages"][stage],
            "rank": mixed_config.r,
            "alpha": mixed_config.lora_alpha,
            "layers": len({k.split(".lora_")[0] for k in state}),
        }
    manifest = {
        **{k: v for k, v in first.items() if k not in ("config", "global_step")},
        "stages": mixed_stages,
        "tasks": sorted({t for m in manifests for t in m.get("tasks", [])}),
        "example_instructions": [t for m in manifests for t in m.get("example_instructions", [])],
        "mixed_from": [{"folder": str(folder), "weight": weight} for folder, weight in adapters],
        "combination_type": combination_type,
        "source_checkpoint": None,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    (out / "README.md").write_text(_model_card(manifest, []), encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------------------ merge
def merge(folder: str | Path, base: str | Path, out: str | Path, weight: float = 1.0) -> Path:
    """Folds an adapter into its base checkpoint and saves a full, adapter-free stage checkpoint.

    `out` ending in `.ckpt` is the file; otherwise a folder that receives `model.ckpt`. The result starts a run with
    `--model.init_from` and loads with `InstructImagen.load_from_checkpoint`.
    """
    model, _ = model_from_checkpoint(base, weights="ema", with_lora=False)
    stage = stage_name(model)
    manifest = read_manifest(folder)
    if stage not in manifest["stages"]:
        raise ValueError(f"{folder}: adapts stages {sorted(manifest['stages'])}, not {stage!r}")
    check_base(manifest, stage, model, folder)
    config, state = read_stage(folder, stage)
    peft_model = PeftModel(model.model, config, adapter_name="merge")
    load_into(peft_model, config, state, "merge", str(Path(folder) / stage), inject=False)
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            module.set_scale("merge", weight)
    model.model = peft_model.merge_and_unload()
    out = Path(out)
    path = out if out.suffix == ".ckpt" else out / "model.ckpt"
    return save_weights_checkpoint(model, path)
