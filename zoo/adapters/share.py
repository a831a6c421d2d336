"""Sharing LoRA adapters: export a run's adapter with its model card, mix several, merge one back into its base.

Each writes or reads the folder format of `zoo.adapters.folder`; the checkpoints are read and written through
`zoo.checkpoint_io`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from diffusers import UNet2DConditionModel
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from zoo.adapters.folder import (
    DIFFUSERS_FILE,
    FORMAT,
    MANIFEST,
    PEFT_PREFIX,
    load_into,
    open_stage,
    read_manifest,
    read_stage,
    resolve,
    stage_name,
    write_stage,
)
from zoo.checkpoint_io import Weights, load_stage, save_weights_checkpoint
from zoo.grid import to_pil
from zoo.lit.module import InstructImagen
from zoo.lit.sr_module import SuperResolution
from zoo.lora import model_fingerprint
from zoo.models.instruct_unet import InstructUNet
from zoo.models.presets import resolve_unet_config

# The stages an adapter can adapt; a checkpoint's hyperparameters tell which one it holds (`load_stage`).
STAGES = (InstructImagen, SuperResolution)


# ----------------------------------------------------------------------------------------------------- export
def _run_config(checkpoint_path: Path) -> dict[str, Any] | None:
    """The resolved LightningCLI config saved next to the run (`<run>/config.yaml`), if the checkpoint is in a run."""
    for folder in (checkpoint_path.parent, checkpoint_path.parent.parent):
        if (folder / "config.yaml").is_file():
            return yaml.safe_load((folder / "config.yaml").read_text())
    return None


def _example_instructions(config: dict[str, Any] | None, count: int) -> list:
    """Up to `count` held-out instructions (the last example of each task, in turn) of the run's tasks."""
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

    # The Hub renders `widget` as the card's gallery: each sample image under the instruction that made it.
    texts = manifest.get("example_instructions", [])
    task_tags = sorted({path.rpartition(".")[2].lower() for path in manifest.get("tasks", [])})
    data = ModelCardData(
        library_name="peft",
        license="apache-2.0",
        tags=["lora", "zoo", "instruct-imagen", "text-to-image", *task_tags],
        base_model_fingerprint=sorted({s["fingerprint"] for s in manifest["stages"].values()}),
        widget=[{"text": text, "output": {"url": path}} for text, path in zip(texts, samples)] or None,
    )
    stages = "\n".join(
        f"| {name} | {s['rank']} | {s['alpha']} | {s['layers']} | `{s['fingerprint']}` |"
        for name, s in manifest["stages"].items()
    )
    references = manifest.get("example_references") or [[] for _ in texts]
    examples = "\n".join(
        f"- {text}" + "".join(f" · {r['marker']} {r['text']}: ![{r['marker']}]({r['image']})" for r in refs)
        for text, refs in zip(texts, references)
    )
    examples = examples or "- (none recorded)"
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
python -m zoo generate "<instruction>" --ckpt BASE.ckpt --adapter .:1.0     # or --adapter user/name:1.0 from the Hub
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
    weights: Weights = "ema",
    diffusers: bool = False,
    num_samples: int = 4,
    sample_steps: int | None = None,
) -> Path:
    """Writes an adapter folder from a LoRA training checkpoint (layout: `zoo.adapters.folder`)."""
    ckpt, out = Path(ckpt), Path(out)
    model, checkpoint = load_stage(STAGES, ckpt, weights=weights)
    if model.lora_config is None:
        raise ValueError(f"{ckpt}: trained without LoRA (model.lora is null); there is no adapter to export")
    stage = stage_name(model)
    # 1. the peft adapter, exactly as PeftModel(InstructUNet).save_pretrained would write it
    state = {PEFT_PREFIX + k: v for k, v in get_peft_model_state_dict(model.lora_root()).items()}
    stage_dir = write_stage(out, stage, state, model.lora_config)
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
        save_file({k: v.contiguous() for k, v in unet_state.items()}, stage_dir / DIFFUSERS_FILE, metadata=metadata)
    # 3. manifest, run config, samples and card
    config = _run_config(ckpt)
    # Card samples come from the base stage: an SR stage alone has no low-resolution image to start from.
    examples = _example_instructions(config, num_samples) if stage == "base" else []
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
        for i, (example, image) in enumerate(zip(examples, images)):
            to_pil(image).save(out / "samples" / f"sample_{i}.png")
            samples.append(f"samples/sample_{i}.png")
            references = []
            for j, item in enumerate(example.context):  # the card shows each example with its references
                to_pil(item.image).save(out / "samples" / f"sample_{i}_ref{j + 1}.png")
                references.append(
                    {"marker": item.marker, "text": item.text, "image": f"samples/sample_{i}_ref{j + 1}.png"}
                )
            manifest.setdefault("example_references", []).append(references)
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
    if len(adapters) < 2:
        raise ValueError("lora mix needs at least two adapters (DIR:WEIGHT ...)")
    given = [str(folder) for folder, _ in adapters]  # as the user named them (a path or a Hub repo id)
    adapters = [(resolve(folder), weight) for folder, weight in adapters]
    manifests = [read_manifest(folder) for folder, _ in adapters]
    first = manifests[0]
    out = Path(out)
    mixed_stages = {}
    if "sr" in first["stages"]:
        raise ValueError(f"{adapters[0][0]}: lora mix handles base-stage adapters only; this one adapts the SR stage")
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
        state = get_peft_model_state_dict(peft_model, adapter_name="mixed")
        mixed_config = peft_model.peft_config["mixed"]
        write_stage(out, stage, state, mixed_config)
        mixed_stages[stage] = {
            **first["stages"][stage],
            "rank": mixed_config.r,
            "alpha": mixed_config.lora_alpha,
            "layers": len({k.split(".lora_")[0] for k in state}),
        }
    manifest = {
        **{k: v for k, v in first.items() if k not in ("config", "global_step", "example_references")},
        "stages": mixed_stages,
        "tasks": sorted({t for m in manifests for t in m.get("tasks", [])}),
        "example_instructions": [t for m in manifests for t in m.get("example_instructions", [])],
        "mixed_from": [{"folder": name, "weight": weight} for name, (_, weight) in zip(given, adapters)],
        "combination_type": combination_type,
        "source_checkpoint": None,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    (out / "README.md").write_text(_model_card(manifest, []), encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------------------ merge
def merge(folder: str | Path, base: str | Path, out: str | Path, weight: float = 1.0) -> Path:
    """Folds an adapter into its base checkpoint (base or SR stage) and saves a full, adapter-free stage checkpoint.

    `out` ending in `.ckpt` is the file; otherwise a folder that receives `model.ckpt`. The result starts a run with
    `--model.init_from` and loads with the stage's `load_from_checkpoint`.
    """
    model, _ = load_stage(STAGES, base, with_lora=False)
    stage = stage_name(model)
    folder, config, state = open_stage(folder, model)
    root = model.lora_root()
    peft_model = PeftModel(root, config, adapter_name="merge")
    load_into(peft_model, config, state, "merge", str(Path(folder) / stage), inject=False)
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            module.set_scale("merge", weight)
    merged = peft_model.merge_and_unload()
    assert merged is root  # peft folds the layers in place: the stage holds the merged network already
    out = Path(out)
    path = out if out.suffix == ".ckpt" else out / "model.ckpt"
    return save_weights_checkpoint(model, path)
