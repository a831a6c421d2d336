"""Checkpoint files: reading them without ever running code from them, rebuilding a stage from one, writing one.

Reading. A `.ckpt` is a pickle, and unpickling an arbitrary file can run arbitrary code. Every checkpoint a user
names — `generate --ckpt`, `evaluate --ckpt`, `rate export --ckpt`, `export --ckpt`, `fit|validate|test|predict
--ckpt_path`, `--model.init_from`, `lora export --ckpt`, `lora merge --base`, `InstructImagenPipeline.from_checkpoint`
— is read here, always with `torch.load(weights_only=True)` passed explicitly: tensors and plain containers only,
anything else refused before it is built. torch honours an explicit `weights_only=True` even when
`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` is set (that variable only changes the default, which Lightning relies on), so
the workaround people paste for other projects' checkpoints does not open this door.

Rebuilding (`load_stage`). A stage comes back from its checkpoint's hyperparameters and weights, the same way for the
pipeline, evaluation, LoRA export and merge:
- which weights: "ema" reads `state_dict` (the average, when the run kept one with `EMAWeightAveraging`), "live" the
  non-averaged `current_model_state` beside it (a run without an average has only live weights);
- `compile`: not carried over: a rebuilt stage samples uncompiled wherever its run was trained;
- `init_from`: a checkpoint that holds the whole network is its own source, so the run's `init_from` is not read
  again (the file may be gone, and reading it is wasted) and the stage keeps the architecture it was trained with
  (`stage_arguments`). An adapter-only checkpoint (an FSDP LoRA run, `zoo.lit.fsdp`) takes its frozen base from
  `init_from`, as the run did.

Writing (`save_weights_checkpoint`): weights and hyperparameters only, which `--model.init_from`, `load_stage` and
Lightning's `load_from_checkpoint` read.

Every failure to read is a `CheckpointError` (a ValueError) whose message names the file and says what to do.
"""

from __future__ import annotations

import inspect
import os
import pickle
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

from zoo.lora import base_state_dict
from zoo.models.presets import resolve_unet_config, takes_weights_config

Stage = TypeVar("Stage", bound=torch.nn.Module)
Weights = Literal["ema", "live"]


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, not a checkpoint, or holds objects that could run code."""


def _label(path: str | Path, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def _explain(label: str, error: BaseException) -> CheckpointError:
    if isinstance(error, pickle.UnpicklingError):
        return CheckpointError(
            f"{label}: refused: it holds Python objects other than tensors and plain containers, which could run code "
            "when loaded; zoo reads weights-only checkpoints (as `python -m zoo fit` writes them) — if you made this "
            f"file and trust it, re-save its tensors with torch.save ({_first_line(error)})"
        )
    return CheckpointError(f"{label}: not a readable checkpoint ({type(error).__name__}: {_first_line(error)})")


# --------------------------------------------------------------------------------------------------- reading
def load_checkpoint(path: str | Path, flag: str | None = None, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at `path`, weights-only, on the CPU.

    Args:
        flag: the option that named the file (e.g. "--ckpt"), put before it in error messages.
        mmap: memory-map the tensor data instead of reading it (cheap when only the structure is needed).

    Raises:
        CheckpointError: naming the file when it is missing, unreadable, not a dict, or not weights-only.
    """
    if not Path(path).is_file():
        raise CheckpointError(f"{_label(path, flag)}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises several types for damaged, foreign or unsafe files
        raise _explain(_label(path, flag), error) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{_label(path, flag)}: not a checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def check_checkpoint(path: str | Path, flag: str | None = None) -> None:
    """Raises `CheckpointError` unless `path` is a weights-only checkpoint (tensor data is not read)."""
    load_checkpoint(path, flag, mmap=True)


# ------------------------------------------------------------------------------------------------ rebuilding
def stage_weights(checkpoint: dict[str, Any], weights: Weights = "ema") -> dict[str, torch.Tensor]:
    """The weights to rebuild a stage with: the average ("ema") or the live weights ("live"); see the module doc."""
    if weights not in ("ema", "live"):
        raise ValueError(f"weights must be 'ema' or 'live', got {weights!r}")
    live = checkpoint.get("current_model_state")
    state = live if weights == "live" and live is not None else checkpoint["state_dict"]
    if live is not None and (checkpoint.get("hyper_parameters") or {}).get("lora"):
        # A LoRA run trains its adapters only, so its live base weights are the ones it started from; checkpoints
        # written before zoo.lit.stage.keep_frozen_weights_out_of_the_average hold an EMA-drifted base copy.
        state = {k: v if ".lora_" in k else live.get(k, v) for k, v in state.items()}
    return dict(state)


def stage_arguments(hparams: dict[str, Any], whole: bool = True) -> dict[str, Any]:
    """A stage's constructor arguments from its saved hyperparameters (LightningCLI's `_class_path` and the like
    dropped). With `whole` weights at hand, `init_from` is not read again: an IF preset that took its architecture
    from init_from's `config.json` gets that config in its place."""
    arguments = {k: v for k, v in hparams.items() if not k.startswith("_")}
    init_from = arguments.get("init_from")
    if whole and init_from is not None:
        if takes_weights_config(arguments.get("unet"), init_from):
            arguments["unet"] = resolve_unet_config(arguments["unet"], init_from)
        arguments["init_from"] = None
    # `compile` is how a training run ran, not what the model is: a stage rebuilt to sample runs eagerly (compiling
    # takes minutes on a CPU and fails where no compiler is installed); `stage.model.unet.compile()` opts in.
    if "compile" in arguments:
        arguments["compile"] = False
    return arguments


def load_stage(
    stage_class: type[Stage] | tuple[type[Stage], ...],
    path: str | Path,
    flag: str | None = None,
    weights: Weights = "ema",
    with_lora: bool = True,
) -> tuple[Stage, dict[str, Any]]:
    """A stage rebuilt from its checkpoint, in eval mode, and the checkpoint's dict (step, callbacks' state, ...).

    Args:
        stage_class: the stage the file holds (`InstructImagen` or `SuperResolution`; the caller names it, as this
            module stands below the stages), or several: the first whose `__init__` takes every saved
            hyperparameter (a base checkpoint has no `lowres_size`, which only the SR stage takes).
        flag: the option that named the file, for error messages.
        weights: "ema" or "live" (see the module docstring).
        with_lora: False builds the network without adapters (those in the checkpoint dropped, `.base_layer` keys
            renamed): the base that a LoRA run adapted.

    Raises:
        CheckpointError: naming the file when it cannot be read, was not written by `python -m zoo fit`, or does not
            fit `stage_class`.
    """
    label = _label(path, flag)
    checkpoint = load_checkpoint(path, flag)
    if not checkpoint.get("hyper_parameters") or "state_dict" not in checkpoint:
        raise CheckpointError(f"{label}: no hyper_parameters or state_dict; not a checkpoint of `python -m zoo fit`")
    state = stage_weights(checkpoint, weights)
    whole = not state or not all(".lora_" in k for k in state)
    arguments = stage_arguments(checkpoint["hyper_parameters"], whole)
    if isinstance(stage_class, tuple):
        fits = [c for c in stage_class if set(arguments) <= set(inspect.signature(c).parameters)]
        stage_class = fits[0] if fits else stage_class[0]  # none fits: the first one's error names the file
    accepted = inspect.signature(stage_class).parameters
    arguments = {k: v for k, v in arguments.items() if k in accepted}  # as Lightning's load_from_checkpoint does
    if not with_lora:
        arguments.pop("lora", None)
        state = base_state_dict(state)
    try:
        stage = stage_class(**arguments)
        stage.on_load_checkpoint({"state_dict": state})  # adds a pretrained text encoder's weights; checks every key
        stage.load_state_dict(state)
    except CheckpointError:
        raise
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise CheckpointError(f"{label}: not a {stage_class.__name__} checkpoint ({_first_line(error)})") from error
    return stage.eval(), checkpoint


# --------------------------------------------------------------------------------------------------- writing
def save_weights_checkpoint(stage: torch.nn.Module, path: str | Path) -> Path:
    """Writes a weights-only checkpoint of `stage` (a LightningModule) atomically; returns its path."""
    path = Path(path)
    checkpoint = {
        "state_dict": stage.state_dict(),
        "hyper_parameters": dict(stage.hparams),
        "pytorch-lightning_version": version("lightning"),  # Lightning's load_from_checkpoint reads it
    }
    stage.on_save_checkpoint(checkpoint)
    checkpoint.pop("zoo_rng_state", None)
    checkpoint.pop("zoo_nonfinite", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save(checkpoint, tmp)
    os.replace(tmp.name, path)
    return path
