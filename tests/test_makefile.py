"""`make clean`: it removes training output under checkpoints/ and keeps every shipped model (issue #11, item 6)."""

import shutil
import subprocess

import pytest
from conftest import REPO_ROOT, shipped_models


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_clean_keeps_shipped_models_and_removes_runs(tmp_path):
    shipped = shipped_models()
    assert "world-base-32-refiner" in shipped  # the parse found the list
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    for name in [*shipped, "stage2", "base-refiner"]:
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    (tmp_path / "checkpoints" / "README.md").write_text("kept\n")
    # VENV points into tmp_path, so the rule's `rm -rf $(VENV)` cannot touch the project's environment
    subprocess.run(["make", "-s", "clean", f"VENV={tmp_path / 'venv'}"], cwd=tmp_path, check=True)
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == sorted([*shipped, "README.md"])
