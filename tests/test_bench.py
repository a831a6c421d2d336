"""Smoke runs of every benchmark script at its smallest size: each must run to its headline line, so a change that
breaks a benchmark shows up in the test suite, not months later. (The numbers are not checked: timings belong to the
benchmarks themselves, run on an idle machine.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cli_helpers import REPO_ROOT

SMALLEST = {
    "context_overhead.py": ["--preset", "tiny", "--batch", "2", "--steps", "2", "--repeats", "1"],
    "vs_ifpipeline.py": ["--batch", "1", "--steps", "2", "--repeats", "1"],
    "fast_solver.py": ["--num", "3", "--ddpm-steps", "3", "--fast-steps", "2"],  # no --ckpt: an untrained tiny model
    "lora_vs_full.py": ["--preset", "tiny", "--steps", "3", "--batch", "2"],
    "memory.py": ["--shapes", "tiny", "--steps", "1"],
    # no compile variants: inductor's C++ build takes minutes on a CPU
    "gpu_throughput.py": ["--size", "tiny", "--steps", "1", "--ddpm-steps", "2", "--fast-steps", "2", "--no-compile"],
    "time_to_quality.py": [
        "--minutes",
        "0.3",
        "--every",
        "0.15",
        "--n",
        "2",
        "--steps",
        "2",
        "--out",
        "ttq",
        "--variant",
        "tiny=--model.unet tiny --model.text_encoder builtin:tiny-t5 --data.image_size 16 "
        "--data.batch_size 2 --data.num_workers 0 --model.init_from null",
    ],
    "text_refiner.py": ["--preset", "tiny", "--batch", "2", "--repeats", "1"],
    "data_throughput.py": [
        "--sizes",
        "32",
        "--samples",
        "8",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--unet",
        "tiny",
        "--text-encoder",
        "builtin:tiny-t5",
        "--steps",
        "1",
    ],
}


def test_every_benchmark_is_listed() -> None:  # (helpers shared by the scripts start with "_")
    assert sorted(p.name for p in (REPO_ROOT / "bench").glob("[!_]*.py")) == sorted(SMALLEST)


# The two longest smoke runs (a training loop with evaluations; LoRA and full fine-tuning side by side) run with
# `pytest -m slow`, to keep the default suite under ten minutes on two cores.
SLOW = {"time_to_quality.py", "lora_vs_full.py"}


@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in sorted(SMALLEST)]
)
def test_benchmark_runs_to_its_headline(script: str, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), *SMALLEST[script]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1].lower()
    assert "headline" in last or "lora r=" in last, result.stdout[-2000:]
