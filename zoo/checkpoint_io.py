"""Reading checkpoint files a user hands to zoo, without ever running code from them.

A `.ckpt` is a pickle, and unpickling an arbitrary file can run arbitrary code. Every checkpoint a user names —
`generate --ckpt`, `evaluate --ckpt`, `rate export --ckpt`, `fit|validate|test|predict --ckpt_path`,
`--model.init_from`, `lora export --ckpt`, `lora merge --base`, `InstructImagenPipeline.from_checkpoint` — is read
here, always with `torch.load(weights_only=True)` passed explicitly: tensors and plain containers only, anything
else refused before it is built. torch honours an explicit `weights_only=True` even when
`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` is set (that variable only changes the default, which Lightning relies on), so
the workaround people paste for other projects' checkpoints does not open this door.

- `load_checkpoint`: the checkpoint as a dict.
- `load_module`: a LightningModule rebuilt from its checkpoint (Lightning's `load_from_checkpoint`, weights-only).
- `check_checkpoint`: reads only the pickled structure (tensor data memory-mapped, not loaded), to refuse a bad file
  up front where Lightning will read it later itself (`--ckpt_path`, which the CLI also runs weights-only).

Every failure is a `CheckpointError` (a ValueError) whose message names the file and says what to do.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, TypeVar

import torch
from lightning.pytorch import LightningModule

Module = TypeVar("Module", bound=LightningModule)


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, not a checkpoint, or holds objects that could run code."""


def _label(path: str | Path, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def _explain(label: str, error: BaseException) -> CheckpointError:
    first_line = (str(error).strip().splitlines() or [""])[0]
    if isinstance(error, pickle.UnpicklingError):
        return CheckpointError(
            f"{label}: refused: it holds Python objects other than tensors and plain containers, which could run code "
            "when loaded; zoo reads weights-only checkpoints (as `python -m zoo fit` writes them) — if you made this "
            f"file and trust it, re-save its tensors with torch.save ({first_line})"
        )
    return CheckpointError(f"{label}: not a readable checkpoint ({type(error).__name__}: {first_line})")


def _existing(path: str | Path, flag: str | None) -> Path:
    if not Path(path).is_file():
        raise CheckpointError(f"{_label(path, flag)}: no such file")
    return Path(path)


def load_checkpoint(path: str | Path, flag: str | None = None, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at `path`, weights-only, on the CPU.

    Args:
        flag: the option that named the file (e.g. "--ckpt"), put before it in error messages.
        mmap: memory-map the tensor data instead of reading it (cheap when only the structure is needed).

    Raises:
        CheckpointError: naming the file when it is missing, unreadable, not a dict, or not weights-only.
    """
    file = _existing(path, flag)
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises several types for damaged, foreign or unsafe files
        raise _explain(_label(path, flag), error) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{_label(path, flag)}: not a checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def check_checkpoint(path: str | Path, flag: str | None = None) -> None:
    """Raises `CheckpointError` unless `path` is a weights-only checkpoint (tensor data is not read)."""
    load_checkpoint(path, flag, mmap=True)


def load_module(
    module_class: type[Module], path: str | Path, flag: str | None = None, map_location: str = "cpu"
) -> Module:
    """`module_class.load_from_checkpoint(path)`, weights-only.

    Raises:
        CheckpointError: naming the file when it is missing, unreadable or not weights-only. A ValueError of the
            module's own (e.g. keys that do not fit) passes through with the file named in front.
    """
    file = _existing(path, flag)
    try:
        return module_class.load_from_checkpoint(file, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except ValueError as error:
        raise CheckpointError(f"{_label(path, flag)}: {error}") from error
    except Exception as error:  # the file, not zoo: unreadable, truncated, or unsafe
        raise _explain(_label(path, flag), error) from error
