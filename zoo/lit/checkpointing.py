"""What makes a resumed run exact and safe: compatibility checks, the random stream, non-finite losses, run dirs.

- `check_state_compatible`: resuming another recipe's or model's checkpoint fails naming the keys and shapes that
  disagree (before any tensor is copied).
- `rng_state` / `restore_rng_state`: Lightning does not store the global random generators in a checkpoint; the
  condition dropout and diffusion noise draw from them, so a resumed run would otherwise take a different path.
- `NonFiniteLossGuard`: counts NaN/inf losses (their steps are skipped) and stops training after `patience` in a row.
- `resolve_resume`: turns `--ckpt_path last|FILE` into the file and the run directory it belongs to, so the logger
  keeps writing into the same `version_N` folder (Lightning alone would open a new version and miss `last.ckpt`).

Checkpoint files themselves are written atomically by Lightning (`TorchCheckpointIO` → `_atomic_save`: the bytes
are serialised in memory and written inside an fsspec transaction, i.e. to a temporary file that is moved into
place on success), so a killed process leaves either the previous file or the new one, never half of one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states


def check_state_compatible(own: dict[str, torch.Tensor], theirs: dict[str, Any], source: str) -> None:
    """Raises ValueError naming missing/unexpected keys and mismatched shapes between two state dicts."""
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = [
        f"{k}: {tuple(theirs[k].shape)} in {source} vs {tuple(own[k].shape)} in this model"
        for k in sorted(set(own) & set(theirs))
        if hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} mismatched shapes {shapes[:5]}")
        if missing:
            parts.append(f"{len(missing)} keys missing from {source} {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys in {source} {unexpected[:5]}")
        raise ValueError(
            f"{source} was written by another recipe or model: "
            + "; ".join(parts)
            + ". Resume with the recipe that wrote it, or start from its weights with --model.init_from"
        )


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python generator states in types `torch.load(weights_only=True)` accepts."""
    state = _collect_rng_states(include_cuda=torch.cuda.is_available())
    name, keys, pos, has_gauss, cached = state["numpy"]
    state["numpy"] = (name, torch.from_numpy(keys.copy()), pos, has_gauss, cached)
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    state = dict(state)
    if not torch.cuda.is_available():
        state.pop("torch.cuda", None)
    name, keys, pos, has_gauss, cached = state["numpy"]
    state["numpy"] = (name, keys.numpy(), pos, has_gauss, cached)
    _set_rng_states(state)


class NonFiniteLossGuard:
    """Counts skipped non-finite steps; raises after `patience` consecutive ones.

    Args:
        patience: consecutive non-finite losses that stop training (≥ 1).
    """

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"nonfinite_patience must be ≥ 1, got {patience}")
        self.patience, self.total, self.consecutive = patience, 0, 0

    def update(self, finite: bool, step: int) -> None:
        if finite:
            self.consecutive = 0
            return
        self.total += 1
        self.consecutive += 1
        if self.consecutive >= self.patience:
            raise FloatingPointError(
                f"the loss was NaN or infinite {self.consecutive} times in a row (at step {step}; {self.total} skipped "
                "steps in all), so training stopped. The last good checkpoint is kept; lower the learning rate, check "
                "the data, or raise model.nonfinite_patience"
            )

    def state_dict(self) -> dict[str, int]:
        return {"total": self.total, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.total, self.consecutive = state.get("total", 0), state.get("consecutive", 0)


def find_last_checkpoint(root: str | Path) -> Path | None:
    """The newest `last*.ckpt` under `root` (any logger name or version), or None."""
    candidates = [p for p in Path(root).glob("**/checkpoints/last*.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def resolve_resume(ckpt_path: str, default_root_dir: str | Path) -> tuple[str, dict[str, str] | None]:
    """(checkpoint file, logger run {save_dir, name, version}) for `--ckpt_path last|FILE`.

    The run is read from the path Lightning writes, `<save_dir>/<name>/<version>/checkpoints/<file>.ckpt`; None when
    the file lies elsewhere (an explicit `ModelCheckpoint.dirpath`), in which case the logger is left as configured.
    """
    path = find_last_checkpoint(default_root_dir) if ckpt_path == "last" else Path(ckpt_path)
    if path is None:
        return ckpt_path, None  # Lightning warns that there is nothing to resume and starts fresh
    if not path.is_file():
        raise ValueError(f"--ckpt_path {ckpt_path}: no such file")
    if path.parent.name != "checkpoints" or len(path.parents) < 4:
        return str(path), None
    run = path.parent.parent
    return str(path), {"save_dir": str(run.parent.parent), "name": run.parent.name, "version": run.name}
