"""A user's mistake in a recipe, its data or its files ends `python -m zoo fit` (and `data preview`) with one line on
stderr naming the field or file, exit code 2, and no traceback or jsonargparse "Given value: Namespace(...)" dump.

Each case runs through `zoo.cli.main` in-process, as a user's command line; one runs as a real subprocess, so the
stderr checked there is byte for byte what a user sees.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import run_zoo, tiny_recipe, write_recipe
from PIL import Image

from zoo.cli import main


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs pass their arguments explicitly; hide pytest's own argv from LightningCLI."""
    monkeypatch.setattr(sys, "argv", ["zoo"])


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of `python -m zoo ARGV` run in-process (a parse-style error exits by SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "Namespace(" not in captured.err
    return code, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def dataset(folder: Path) -> Path:
    """A JSON-lines dataset of 8 tiny photos with captions, in columns `img` and `text`."""
    folder.mkdir()
    rows = []
    for index in range(8):
        Image.new("RGB", (12, 12), (index * 30, 80, 160)).save(folder / f"p{index}.png")
        rows.append({"img": f"p{index}.png", "text": f"a photo number {index}"})
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return folder / "rows.jsonl"


def source_recipe(tmp_path: Path, **source: object) -> Path:
    recipe = tiny_recipe(tmp_path / "run")
    source = {"path": str(dataset(tmp_path / "data")), "columns": {"image": "img", "caption": "text"}, **source}
    task = {"class_path": "tasks.text_to_image.TextToImage", "init_args": {"image_size": 16, "source": source}}
    recipe["data"]["tasks"] = [task]
    return write_recipe(tmp_path / "recipe.yaml", recipe)


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path / "recipe.yaml", tiny_recipe(tmp_path / "run"))


@pytest.mark.parametrize(
    "override, expected",
    [
        (["--model.unet", "no_such_net"], "model (zoo.lit.module.InstructImagen): unknown UNet preset 'no_such_net'"),
        (
            ["--data.tasks.init_args.num_examples", "-3"],
            "data.tasks[1] (tasks.styled_generation.StyledGeneration): num_examples must be at least 1, got -3",
        ),
        (
            ["--data.max_consecutive_bad", "0"],
            "data (zoo.lit.data.InstructionDataModule): data.max_consecutive_bad must be at least 1, got 0",
        ),
        (["--data.ratios", "[1, 2, 3]"], "data.ratios has 3 entries but data.tasks has 2"),
        (["--model.learning_rate", "-1"], "model (zoo.lit.module.InstructImagen): model.learning_rate must be > 0"),
        (
            ["--trainer.strategy", "no_such_strategy"],
            "trainer (lightning.pytorch.trainer.trainer.Trainer): You selected an invalid strategy name",
        ),
    ],
    ids=["unet", "task-init-arg", "typed-init", "ratio-length", "learning-rate", "trainer"],
)
def test_a_component_that_refuses_a_value_is_one_line_naming_the_field(
    recipe: Path, override: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["fit", "--config", str(recipe), *override], capsys)
    assert code == 2
    assert expected in one_error_line(err)


def test_a_missing_source_path_is_one_line_naming_the_task_and_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = source_recipe(tmp_path, path=str(tmp_path / "nowhere"))
    code, err = run(["fit", "--config", str(recipe)], capsys)
    assert code == 2
    line = one_error_line(err)
    assert line.startswith("error: data.tasks[0] (tasks.text_to_image.TextToImage): source.path")
    assert "nowhere" in line


def test_a_bad_column_mapping_is_one_line_listing_the_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = source_recipe(tmp_path, columns={"image": "picture", "caption": "text"})
    code, err = run(["fit", "--config", str(recipe)], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "data.tasks[0]" in line and "no column 'picture'" in line and "['img', 'text']" in line


def test_a_truncated_resume_checkpoint_is_one_line_naming_the_file(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(64, 64)}, "global_step": 3}, whole)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    code, err = run(["fit", "--config", str(recipe), "--ckpt_path", str(cut)], capsys)
    assert code == 2
    assert f"--ckpt_path {cut}: not a readable checkpoint" in one_error_line(err)


def test_a_missing_resume_checkpoint_is_one_line_naming_it(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.ckpt"
    code, err = run(["fit", "--config", str(recipe), "--ckpt_path", str(missing)], capsys)
    assert code == 2
    assert one_error_line(err) == f"error: --ckpt_path {missing}: no such file"


@pytest.mark.parametrize(
    "fault, workers, expected",
    [("nan", 0, "the image holds NaN or infinite values"), ("empty", 1, "the image is empty (0×0 pixels)")],
)
def test_an_invalid_image_tensor_is_one_line_naming_the_task_and_example(
    tmp_path: Path, fault: str, workers: int, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tiny_recipe(tmp_path / "run")
    recipe["data"]["tasks"] = [{"class_path": "fake_tasks.Invalid", "init_args": {"fault": fault}}]
    recipe["data"]["num_workers"] = workers  # a worker process re-raises with its traceback as the message
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    code, err = run(["fit", "--config", str(path)], capsys)
    assert code == 2
    line = one_error_line(err)
    assert line.startswith("error: task 'invalid', example ") and f"target: {expected}" in line


def test_data_preview_of_an_invalid_image_tensor_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tiny_recipe(tmp_path / "run")
    recipe["data"]["tasks"] = [{"class_path": "fake_tasks.Invalid"}]
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    code, err = run(["data", "preview", "--config", str(path), "--out", str(tmp_path / "sheet.png")], capsys)
    assert code == 2
    assert "task 'invalid'" in one_error_line(err) and "NaN" in err


def test_a_bad_model_value_in_a_real_process_has_no_namespace_dump(recipe: Path) -> None:
    """jsonargparse wraps a subclass-mode model's error in "Does not validate against any of the Union subtypes ...
    Given value: Namespace(...)"; the user sees the model's own message instead."""
    result = run_zoo("fit", "--config", str(recipe), "--model.unet", "no_such_net")
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "Namespace(" not in result.stderr and "Union" not in result.stderr
    assert "model (zoo.lit.module.InstructImagen): unknown UNet preset 'no_such_net'" in one_error_line(result.stderr)
