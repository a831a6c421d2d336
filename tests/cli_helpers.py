"""Helpers for tests that drive `python -m zoo fit` end to end: a tiny recipe, a run in a subprocess, and a
callback that kills the process for real once a checkpoint is on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_recipe(root: Path, **model: Any) -> dict[str, Any]:
    """A CPU recipe on the tiny model: 16 px, batch 2, 4 samples per epoch (2 steps), no validation."""
    return {
        "seed_everything": 0,
        "trainer": {
            "default_root_dir": str(root),
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 4,
            "limit_val_batches": 0,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True, "every_n_train_steps": 1, "save_top_k": -1},
                },
            ],
        },
        "model": {
            "unet": "tiny",
            "text_encoder": "builtin:tiny-t5",
            "text_max_length": 32,
            "learning_rate": 1e-3,
            "drop_text_and_context": 0.0,
            "drop_context": 0.0,
            **model,
        },
        "data": {
            "image_size": 16,
            "batch_size": 2,
            "samples_per_epoch": 4,
            "val_samples": 2,
            "tasks": [
                {
                    "class_path": "tasks.subject_driven.SubjectDriven",
                    "init_args": {"num_examples": 40, "seed": 0, "image_size": 16},
                },
                {
                    "class_path": "tasks.styled_generation.StyledGeneration",
                    "init_args": {"num_examples": 40, "seed": 1, "image_size": 16},
                },
            ],
        },
    }


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_zoo(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m zoo ARGS` from the repository root (so `zoo` and `tasks` import from this checkout)."""
    full_env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class KillAfterStep(Callback):
    """Ends the process abruptly (os._exit: no teardown, no final checkpoint) when batch `step + 1` starts, i.e.
    right after the checkpoint of optimizer step `step` was written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            os._exit(17)


class DumpBatchTexts(Callback):
    """Writes each rank's batch texts to `<folder>/rank<R>.txt` (one line per instruction)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"rank{trainer.global_rank}.txt", "a") as file:
            file.writelines(text + "\n" for text in batch.texts)
