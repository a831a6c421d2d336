"""Tests of the task mixture: ratios, determinism, mid-epoch resume, bad-row skipping and per-task counts."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
from conftest import IMAGE_SIZE, build_tiny_model
from fake_tasks import BadRows, Flaky
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from tasks.styled_generation import StyledGeneration
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import TextToImage
from zoo.lit.callbacks import DataCounts
from zoo.lit.data import BadExampleError, InstructionDataModule, TaskMixture, resolve_ratios
from zoo.task import Task


def world_tasks() -> list[Task]:
    return [TextToImage(200, 0, IMAGE_SIZE), StyledGeneration(200, 1, IMAGE_SIZE)]


def datamodule(tasks: list[Task] | None = None, **kwargs) -> InstructionDataModule:
    settings = dict(image_size=IMAGE_SIZE, batch_size=4, samples_per_epoch=24, val_samples=8, seed=0)
    return InstructionDataModule(tasks or world_tasks(), **{**settings, **kwargs})


def texts(batches) -> list[list[str]]:
    return [batch.texts for batch in batches]


# ----------------------------------------------------------------------------------------------------- ratios
def test_ratios_as_mapping_equal_the_list_in_task_order() -> None:
    tasks = world_tasks()
    assert resolve_ratios(tasks, {"styled_generation": 3, "text_to_image": 1}) == resolve_ratios(tasks, [1, 3])
    assert resolve_ratios(tasks, [1, 3]) == [0.25, 0.75]
    assert resolve_ratios(tasks, None) == [0.5, 0.5]


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ({"text_to_image": 1, "nope": 1}, r"unknown task names \['nope'\], missing \['styled_generation'\]"),
        ([1.0], "has 1 entries but data.tasks has 2"),
        ([1.0, -1.0], "must be ≥ 0"),
    ],
)
def test_bad_ratios_name_the_field(ratios, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_ratios(world_tasks(), ratios)


def test_mixture_follows_the_ratios_and_is_deterministic() -> None:
    tasks = world_tasks()
    mixture = TaskMixture(tasks, {"text_to_image": 1, "styled_generation": 3}, 400, "train", 0.05, IMAGE_SIZE, 0)
    share = Counter(mixture.locate(i)[0] for i in range(400))[1] / 400
    assert 0.68 < share < 0.82
    again = TaskMixture(tasks, [1, 3], 400, "train", 0.05, IMAGE_SIZE, 0)
    assert [mixture.locate(i) for i in range(50)] == [again.locate(i) for i in range(50)]


# ----------------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_continues_with_the_next_unseen_batch(num_workers: int) -> None:
    loader = datamodule(num_workers=num_workers).train_dataloader()
    iterator = iter(loader)
    seen = [next(iterator) for _ in range(2)]
    state = loader.state_dict()
    assert state["epoch"] == 0 and state["position"] == 8
    rest = list(iterator)

    fresh = datamodule(num_workers=num_workers).train_dataloader()
    fresh.load_state_dict(state)
    resumed = list(fresh)
    assert texts(resumed) == texts(rest) and len(seen) + len(rest) == 6
    assert fresh.state_dict()["drawn"] == loader.state_dict()["drawn"]
    assert sum(loader.drawn.values()) == 24


def test_each_pass_is_a_new_epoch_and_epochs_are_reproducible() -> None:
    loader = datamodule().train_dataloader()
    first, second = texts(loader), texts(loader)
    assert first != second
    other = datamodule().train_dataloader()
    assert texts(other) == first
    other.sampler.set_epoch(1)
    assert texts(other) == second


class Crash(Exception):
    pass


class Record(Callback):
    """Keeps the payload texts of every training batch; raises `Crash` at step `kill_at` (a crash mid-epoch)."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.texts: list[list[str]] = []
        self.kill_at = kill_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.kill_at:
            raise Crash
        self.texts.append(batch.texts)


def fit(tmp_path, max_steps: int, record: Record, ckpt_path: str | None = None) -> Trainer:
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[
            record,
            DataCounts(),
            ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True),
        ],
    )
    # Context tasks and no condition dropout: every batch has a context (the model is not what this test is about).
    model = build_tiny_model(drop_text_and_context=0.0, drop_context=0.0)
    tasks = [StyledGeneration(200, 1, IMAGE_SIZE), SubjectDriven(200, 2, IMAGE_SIZE)]
    trainer.fit(model, datamodule=datamodule(tasks, samples_per_epoch=10, batch_size=2), ckpt_path=ckpt_path)
    return trainer


def test_trainer_killed_mid_epoch_resumes_with_the_same_batches(tmp_path) -> None:
    whole = Record()
    fit(tmp_path / "whole", 6, whole)  # epochs of 5 batches: the run crosses an epoch boundary
    killed = Record(kill_at=3)
    with pytest.raises(Crash):
        fit(tmp_path / "run", 6, killed)  # last.ckpt holds step 3
    assert killed.texts == whole.texts[:3]
    resumed = Record()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(tmp_path / "resumed", 6, resumed, ckpt_path=str(tmp_path / "run" / "ckpt" / "last.ckpt"))
    assert not [w for w in caught if "resumable" in str(w.message)]  # Lightning sees a resumable loader
    assert killed.texts + resumed.texts == whole.texts
    metrics = trainer.callback_metrics
    assert metrics["data/count/subject_driven"] + metrics["data/count/styled_generation"] == 6 * 2
    assert metrics["data/skipped/subject_driven"] == 0


# --------------------------------------------------------------------------------------------------- bad rows
def test_bad_rows_are_skipped_counted_and_named_once(recwarn) -> None:
    loader = datamodule([Flaky()], image_size=8).train_dataloader()
    batches = list(loader)
    assert all(row.startswith("draw row") and int(row.split()[-1]) % 3 for b in batches for row in b.texts)
    skipped = loader.skipped["flaky"]
    assert skipped > 0 and loader.drawn["flaky"] == 24
    named = {str(w.message) for w in recwarn if "skipped bad row" in str(w.message)}
    assert named and all("of task 'flaky': unreadable image" in message for message in named)
    assert len(named) <= skipped  # a row skipped twice is named once
    again = datamodule([Flaky()], image_size=8).train_dataloader()
    assert texts(again) == texts(batches)  # the replacement rows are reproducible


def test_a_bad_row_met_by_training_and_validation_is_named_once() -> None:
    """Every held-out row (19) is bad, so validation falls back to the rows before it, which training draws too:
    the loaders of one data module share what they have named, so each bad row appears in one warning only."""
    data = datamodule([BadRows(20, [17, 18, 19])], batch_size=2, samples_per_epoch=40, val_samples=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for loader in (data.val_dataloader(), data.train_dataloader(), data.val_dataloader()):
            list(loader)
    named = Counter(str(w.message) for w in caught if "skipped bad row" in str(w.message))
    assert set(named) == {
        f"data: skipped bad row 'row-{row}' of task 'bad_rows': truncated image" for row in (17, 18, 19)
    }
    assert set(named.values()) == {1}
    notes = [str(w.message) for w in caught if "validation slice" in str(w.message)]
    assert len(notes) == 1


@pytest.mark.filterwarnings("ignore:data. skipped bad row")
def test_skips_in_worker_processes_reach_the_main_process() -> None:
    in_process = datamodule([Flaky()], image_size=8).train_dataloader()
    list(in_process)
    workers = datamodule([Flaky()], image_size=8, num_workers=2).train_dataloader()
    with pytest.warns(UserWarning, match="skipped bad row 'row-"):
        list(workers)
    assert workers.skipped == in_process.skipped and workers.drawn == in_process.drawn


def test_fail_fast_names_the_task_and_row() -> None:
    loader = datamodule([Flaky()], image_size=8, on_bad_example="fail").train_dataloader()
    with pytest.raises(BadExampleError, match=r"task 'flaky', row 'row-\d+'.*unreadable image.*on_bad_example"):
        list(loader)


def test_fail_fast_from_a_worker_keeps_the_message() -> None:
    loader = datamodule([Flaky()], image_size=8, on_bad_example="fail", num_workers=1).train_dataloader()
    with pytest.raises(BadExampleError, match=r"task 'flaky', row 'row-\d+'"):
        list(loader)


def test_an_unreadable_task_is_an_error_not_an_endless_loop() -> None:
    mixture = TaskMixture([Flaky(every=1)], None, 4, "train", 0.1, 8, 0, max_consecutive_bad=5)
    with pytest.raises(BadExampleError, match="task 'flaky': 5 bad rows in a row.*readable"):
        mixture[0]


# Bad rows where a messy dataset has them: 20 rows and val_fraction 0.05 hold out one row (19) for validation, so a
# bad last row leaves the validation slice with no readable row at all; 40 rows and 0.1 hold out rows 36-39.
BAD_POSITIONS = {
    "first": (20, 0.05, [0, 1, 2]),
    "middle": (20, 0.05, [9, 10]),
    "last": (20, 0.05, [19]),
    "validation slice": (40, 0.1, [36, 37, 38, 39]),
}


@pytest.mark.parametrize("position", list(BAD_POSITIONS))
def test_bad_rows_anywhere_do_not_stop_fit(position: str, tmp_path) -> None:
    """`fit` with validation (sanity check, a mid-run check, the end) survives bad rows at any position under
    on_bad_example: skip, and never trains or validates on a bad row."""
    rows, val_fraction, bad = BAD_POSITIONS[position]

    class Seen(Callback):
        def __init__(self) -> None:
            self.train: list[str] = []
            self.val: list[str] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            self.train += batch.texts

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
            self.val += batch.texts

    seen = Seen()
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=4,
        val_check_interval=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[seen, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
    )
    data = datamodule([BadRows(rows, bad)], batch_size=2, samples_per_epoch=8, val_samples=4, val_fraction=val_fraction)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(build_tiny_model(), datamodule=data)
    assert trainer.global_step == 4 and (tmp_path / "ckpt" / "last.ckpt").is_file()
    used = {int(text.split()[-1]) for text in seen.train + seen.val}
    assert seen.val and not used & set(bad)
    held_out = set(range(rows - max(1, int(rows * val_fraction)), rows))
    assert not {int(text.split()[-1]) for text in seen.train} & held_out  # training never draws the held-out rows
    notes = [str(w.message) for w in caught if "validation slice" in str(w.message)]
    if held_out <= set(bad):  # nothing readable was held out: validation says where its rows come from, once
        assert len(notes) == 1 and "task 'bad_rows'" in notes[0] and "data.val_fraction" in notes[0]
        assert {int(text.split()[-1]) for text in seen.val} <= set(range(min(held_out)))
    else:
        assert not notes and {int(text.split()[-1]) for text in seen.val} <= held_out


def test_validation_rows_are_the_tail_of_each_task_and_reproducible() -> None:
    mixture = TaskMixture([BadRows(40)], None, 16, "val", 0.1, 8, 0)
    rows = [int(mixture[i].text.split()[-1]) for i in range(16)]
    assert set(rows) <= {36, 37, 38, 39} and len(set(rows)) > 1
    assert rows == [int(TaskMixture([BadRows(40)], None, 16, "val", 0.1, 8, 0)[i].text.split()[-1]) for i in range(16)]


def test_bad_settings_are_value_errors() -> None:
    with pytest.raises(ValueError, match="on_bad_example must be 'skip' or 'fail'"):
        datamodule(on_bad_example="ignore")
    with pytest.raises(ValueError, match="max_consecutive_bad must be at least 1"):
        datamodule(max_consecutive_bad=0)


def test_held_out_tasks_never_enter_training():
    from tasks.text_to_image import TextToImage
    from tasks.zeroshot import ZeroShot
    from zoo.lit.data import InstructionDataModule

    with pytest.raises(ValueError, match="held-out"):
        InstructionDataModule([TextToImage(num_examples=20), ZeroShot(num_examples=20)])
