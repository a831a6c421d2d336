"""Tests of what a run shows while it trains: the sample grid's validation rows and the progress bar's epoch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cli_helpers import tiny_recipe, write_recipe
from fake_tasks import BadRows
from lightning.pytorch import LightningModule

from zoo.lit.callbacks import StepProgressBar, distinct_rows
from zoo.lit.data import InstructionDataModule, TaskMixture
from zoo.lit.recipe import PARSER_MODE, ZooCLI


def test_a_one_row_validation_set_gives_one_sample_not_copies() -> None:
    validation = TaskMixture([BadRows(20)], None, 16, "val", 0.05, 8, 0)  # holds out row 19 only
    assert [instruction.text for instruction in distinct_rows(validation, 8)] == ["draw row 19"]


def test_sample_rows_are_distinct_in_validation_order() -> None:
    validation = TaskMixture([BadRows(40)], None, 16, "val", 0.1, 8, 0)  # holds out rows 36-39
    texts = [validation[index].text for index in range(16)]
    assert len(set(texts)) == 4  # sixteen draws with replacement
    assert [instruction.text for instruction in distinct_rows(validation, 8)] == list(dict.fromkeys(texts))
    assert [instruction.text for instruction in distinct_rows(validation, 2)] == list(dict.fromkeys(texts))[:2]


def trainer_of(tmp_path: Path, *overrides: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "argv", ["zoo"])
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_recipe(tmp_path / "run"))
    cli = ZooCLI(
        LightningModule,
        InstructionDataModule,
        subclass_mode_model=True,
        parser_kwargs={"parser_mode": PARSER_MODE},
        run=False,
        args=["--config", str(recipe), "--trainer.enable_progress_bar", "true", *overrides],
    )
    return cli.trainer


@pytest.mark.parametrize(
    "overrides, shown",
    [([], "Epoch 3"), (["--trainer.max_steps", "-1", "--trainer.max_epochs", "10"], "Epoch 3/9")],
    ids=["max_steps", "max_epochs"],
)
def test_the_progress_bar_shows_a_sane_epoch(
    tmp_path: Path, overrides: list[str], shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = trainer_of(tmp_path, *overrides, monkeypatch=monkeypatch)
    bar = trainer.progress_bar_callback
    assert isinstance(bar, StepProgressBar)
    bar._trainer = trainer  # attached in setup(), which only fit() calls
    assert bar._get_train_description(3).strip() == shown


def test_a_recipe_that_names_a_progress_bar_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tqdm = '{"class_path": "lightning.pytorch.callbacks.TQDMProgressBar"}'
    trainer = trainer_of(tmp_path, "--trainer.callbacks+", tqdm, monkeypatch=monkeypatch)
    assert type(trainer.progress_bar_callback).__name__ == "TQDMProgressBar"
