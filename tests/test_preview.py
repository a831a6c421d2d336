"""Tests of `python -m zoo data preview`: the recipe's first training instructions on a sheet, per-task counts."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import REPO_ROOT
from PIL import Image

from zoo.cli import main
from zoo.grid import CELL

STAGE2 = REPO_ROOT / "recipes" / "stage2.yaml"


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["zoo", "data", "preview"])


def test_preview_of_the_demo_recipe(tmp_path, capsys) -> None:
    out = tmp_path / "sheet" / "preview.png"
    argv = ["data", "preview", "--config", str(STAGE2), "--n", "5", "--out", str(out), "--data.image_size", "16"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines() if line.split()}
    assert rows["task"] == ["ratio", "drawn", "skipped"]
    assert rows["text_to_image"][0] == "0.200"  # Table 1: natural 0.15 + art 0.05, one name
    names = (
        "text_to_image",
        "depth_to_image",
        "mask_to_image",
        "edge_to_image",
        "sketch_to_image",
        "subject_driven",
        "styled_generation",
        "style_transfer",
    )
    assert sum(int(rows[name][1]) for name in names) == 5
    assert f"contact sheet written to {out}" in printed
    sheet = Image.open(out)
    assert sheet.height > 5 * CELL and sheet.width >= 2 * CELL  # five rows; at least a context and a target column


def test_preview_counts_skipped_rows_and_shows_masks(tmp_path, capsys) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": {"unet": "tiny", "text_encoder": "builtin:tiny-t5"},
                "data": {
                    "image_size": 8,
                    "samples_per_epoch": 40,
                    "tasks": [{"class_path": "fake_tasks.Flaky"}, {"class_path": "fake_tasks.Masked"}],
                    "ratios": {"flaky": 1, "masked": 1},
                },
            }
        )
    )
    out = tmp_path / "preview.png"
    assert main(["data", "preview", "--config", str(recipe), "--n", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped bad row 'row-" in printed
    flaky = next(line.split() for line in printed.splitlines() if line.startswith("flaky"))
    assert int(flaky[3]) > 0
    columns = (Image.open(out).width - 6) // (CELL + 6)
    assert columns == 3  # context, target, mask


def test_preview_without_a_recipe_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "preview", "--n", "4"])
    assert info.value.code == 2 and "--config" in capsys.readouterr().err
    assert main(["data"]) == 2
