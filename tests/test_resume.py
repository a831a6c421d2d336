"""Start vs resume: exact resume after a real kill (weights, EMA, optimizer, schedule, RNG, data position, run dir),
atomic checkpoint writes, checkpoints of another model, and NaN/inf losses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import run_zoo, tiny_recipe, write_recipe
from conftest import REPO_ROOT, build_tiny_model
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from zoo.lit.callbacks import LastCheckpointAtEnd

EMA = {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.9}}


def recipe(root: Path, steps: int, kill_at: int | None = None, **model) -> dict:
    r = tiny_recipe(root, warmup_steps=3, **model)
    r["trainer"]["max_steps"] = steps
    r["trainer"]["callbacks"].append(EMA)
    if kill_at is not None:
        r["trainer"]["callbacks"].append({"class_path": "cli_helpers.KillAfterStep", "init_args": {"step": kill_at}})
    return r


def step_checkpoints(every: int) -> dict:
    """recipes/stage2.yaml's checkpoint callback (`last.ckpt` on a step cadence, no validation needed), its cadence
    scaled from a long run's steps to a tiny run's."""
    callbacks = yaml.safe_load((REPO_ROOT / "recipes" / "stage2.yaml").read_text())["trainer"]["callbacks"]
    checkpoint = next(c for c in callbacks if c["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint")
    assert checkpoint["init_args"]["save_last"] and checkpoint["init_args"]["every_n_train_steps"] > 0
    return {**checkpoint, "init_args": {**checkpoint["init_args"], "every_n_train_steps": every}}


def test_a_run_that_stops_between_checkpoint_intervals_still_writes_last_ckpt(tmp_path) -> None:
    """max_steps 5 with the recipes' step checkpoints every 4: `last.ckpt` holds step 5 (Lightning alone would leave
    step 4), with the EMA average as `state_dict` and the live weights beside it for resuming."""
    callbacks = yaml.safe_load((REPO_ROOT / "recipes" / "stage2.yaml").read_text())["trainer"]["callbacks"]
    assert "zoo.lit.callbacks.LastCheckpointAtEnd" in callbacks
    r = recipe(tmp_path / "run", 5)
    r["trainer"]["callbacks"][0] = step_checkpoints(every=4)
    r["trainer"]["callbacks"].append("zoo.lit.callbacks.LastCheckpointAtEnd")
    done = run_zoo("fit", "--config", str(write_recipe(tmp_path / "r.yaml", r)))
    assert done.returncode == 0, done.stderr[-3000:]
    last = torch.load(
        tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert last["global_step"] == 5
    average, live = last["state_dict"], last["current_model_state"]
    assert any(not torch.equal(average[name], live[name]) for name in average)  # not the average twice


def test_last_checkpoint_at_end_replaces_a_link_with_a_file(tmp_path) -> None:
    """With `save_last="link"`, Lightning links last.ckpt to the newest interval file; a stop between intervals
    gets a file of its own at last.ckpt, and the interval file it linked to keeps its step."""
    checkpoints = ModelCheckpoint(tmp_path, save_last="link", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=5,
        callbacks=[checkpoints, LastCheckpointAtEnd()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    last, interval = tmp_path / "last.ckpt", tmp_path / "step=4.ckpt"
    assert not last.is_symlink()
    assert torch.load(last, weights_only=True)["global_step"] == 5
    assert torch.load(interval, weights_only=True)["global_step"] == 4


def test_kill_and_resume_equals_uninterrupted(tmp_path) -> None:
    """With the recipes' step checkpoints every 2 steps, a SIGKILL-like exit after step 3 leaves step 2 on disk (at
    most one cadence lost); resuming for 4 more == 6 uninterrupted steps (live and EMA weights, to 1e-6). A run
    ends on a multiple of the cadence here (the test above covers a run that stops in between).

    Epochs are 4 steps, so the kill falls mid-epoch and the resumed run then crosses an epoch boundary; condition
    dropout is on, so the restored random stream matters as much as the restored data position.
    """

    def mid_epoch(root: Path, kill_at: int | None = None) -> dict:
        r = recipe(root, 6, kill_at, lora={"rank": 2}, drop_text_and_context=0.25, drop_context=0.25)
        r["trainer"]["callbacks"][0] = step_checkpoints(every=2)  # in place of the tiny recipe's every-step one
        r["data"]["samples_per_epoch"] = 8  # batch 2: 4 steps per epoch
        return r

    full = run_zoo("fit", "--config", str(write_recipe(tmp_path / "full.yaml", mid_epoch(tmp_path / "full"))))
    assert full.returncode == 0, full.stderr[-3000:]
    first = run_zoo(
        "fit", "--config", str(write_recipe(tmp_path / "a.yaml", mid_epoch(tmp_path / "resumed", kill_at=3)))
    )
    assert first.returncode == 17, first.stderr[-3000:]  # killed by KillAfterStep after step 3, no teardown
    run_dir = tmp_path / "resumed" / "lightning_logs" / "version_0"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2  # step 3 lost
    second = run_zoo(
        "fit",
        "--config",
        str(write_recipe(tmp_path / "b.yaml", mid_epoch(tmp_path / "resumed"))),
        "--ckpt_path",
        "last",
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Restored all states" in second.stderr
    assert sorted(p.name for p in (tmp_path / "resumed" / "lightning_logs").iterdir()) == ["version_0"]  # same run dir
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # the logger wrote its second session there

    a = torch.load(tmp_path / "full" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    for key in ("state_dict", "current_model_state"):  # EMA weights and live weights
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(b[key][name], a[key][name], atol=1e-6, rtol=0, msg=f"{key}/{name}")
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(sb["exp_avg"], sa["exp_avg"], atol=1e-6, rtol=0)
    assert a["lr_schedulers"] == b["lr_schedulers"]


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch) -> None:
    """A write that dies half-way leaves the previous checkpoint intact (Lightning's `_atomic_save`)."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    io, path = TorchCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_checkpoint_of_another_model_is_refused_naming_keys_and_shapes() -> None:
    lora = build_tiny_model(lora={"rank": 2})
    full = build_tiny_model()
    with pytest.raises(ValueError, match=r"another recipe or model.*unexpected keys.*lora_A"):
        full.on_load_checkpoint({"state_dict": lora.state_dict()})
    other = build_tiny_model(
        text_max_length=16,
        unet={**__import__("zoo.models.presets", fromlist=["tiny"]).tiny(), "block_out_channels": (16, 48)},
    )
    with pytest.raises(ValueError, match=r"mismatched shapes.*\(48,\).*\(32,\)"):
        full.on_load_checkpoint({"state_dict": other.state_dict()})


# --------------------------------------------------------------------------------------------- NaN / inf loss
def nan_trainer(tmp_path: Path, monkeypatch, bad_calls: set[int], patience: int, steps: int):
    import zoo.lit.stage as stage
    from tasks.styled_generation import StyledGeneration
    from zoo.lit.data import InstructionDataModule

    calls = {"n": 0}
    real = stage.v_loss

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] in bad_calls else loss

    monkeypatch.setattr(stage, "v_loss", flaky)
    model = build_tiny_model(
        nonfinite_patience=patience, learning_rate=1e-3, drop_text_and_context=0.0, drop_context=0.0
    )
    data = InstructionDataModule(
        [StyledGeneration(num_examples=40, seed=1, image_size=16)], image_size=16, batch_size=2, samples_per_epoch=20
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=-1)
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        callbacks=[checkpoint],
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return trainer, model, data


def test_nonfinite_loss_skips_the_step_and_counts_it(tmp_path, monkeypatch) -> None:
    trainer, model, data = nan_trainer(tmp_path, monkeypatch, bad_calls={2, 3}, patience=3, steps=3)
    trainer.fit(model, data)
    # Lightning still counts a skipped step in global_step (optimizer.step runs with no gradients: no update)
    assert trainer.global_step == 3
    assert model.nonfinite.total == 2
    step1 = torch.load(next(tmp_path.glob("*step=1.ckpt")), weights_only=True)["state_dict"]
    step3 = torch.load(next(tmp_path.glob("*step=3.ckpt")), weights_only=True)["state_dict"]
    assert all(torch.equal(step1[k], step3[k]) for k in step1)  # the NaN steps 2 and 3 changed nothing
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_repeated_nonfinite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch) -> None:
    trainer, model, data = nan_trainer(tmp_path, monkeypatch, bad_calls=set(range(3, 100)), patience=3, steps=10)
    with pytest.raises(FloatingPointError, match="NaN or infinite 3 times in a row"):
        trainer.fit(model, data)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    good = torch.load(next(tmp_path.glob("*step=2.ckpt")), weights_only=True)["state_dict"]
    assert all(torch.equal(last[k], good[k]) and torch.isfinite(good[k]).all() for k in good)
