"""Tests of `python -m zoo data preview`: the recipe's first training instructions on a sheet, per-task counts."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml
from conftest import REPO_ROOT
from PIL import Image, ImageFont

from zoo.cli import main
from zoo.grid import CELL, instruction_grid, wrap
from zoo.instruction import Instruction

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


def test_each_bad_row_is_named_once_with_how_often_it_was_skipped(tmp_path, capsys) -> None:
    """Row 1 of six is bad and training draws from rows 0-4, so the first draws meet it several times."""
    recipe = tmp_path / "recipe.yaml"
    tasks = [{"class_path": "fake_tasks.BadRows", "init_args": {"num_examples": 6, "bad": [1]}}]
    recipe.write_text(yaml.safe_dump({"data": {"image_size": 8, "samples_per_epoch": 40, "tasks": tasks}}))
    assert main(["data", "preview", "--config", str(recipe), "--n", "12", "--out", str(tmp_path / "p.png")]) == 0
    printed = capsys.readouterr().out
    named = [line for line in printed.splitlines() if line.startswith("skipped bad row")]
    skipped = int(next(line.split() for line in printed.splitlines() if line.startswith("bad_rows"))[3])
    assert skipped > 1
    assert named == [f"skipped bad row 'row-1' of task 'bad_rows' ({skipped} times): truncated image"]


def test_instruction_text_wraps_in_full_under_a_target_only_row() -> None:
    """A task without context images has one column; its payload text still shows every word."""
    text = "Produce a picture showing a photograph of a small red bicycle leaning against a whitewashed stone wall"
    short = Instruction("Draw a cat", target=torch.zeros(3, 8, 8), task="text_to_image")
    long = Instruction(text, target=torch.zeros(3, 8, 8), task="text_to_image")
    sheet, one_line = instruction_grid([long]), instruction_grid([short])
    assert sheet.width == one_line.width == 6 + CELL + 6  # one column
    font, width = ImageFont.load_default(), sheet.width - 12
    lines = wrap(f"[text_to_image] {text}", font, width)
    assert " ".join(lines) == f"[text_to_image] {text}" and len(lines) > 3  # the old sheet kept three lines
    assert all(font.getlength(line) <= width for line in lines)
    assert sheet.height - one_line.height == (len(lines) - len(wrap("[text_to_image] Draw a cat", font, width))) * 12
    assert wrap("x" * 500, font, 50) and "".join(wrap("x" * 500, font, 50)) == "x" * 500  # a word wider than a line
