"""Tests of task plugins from outside the core: entry-point discovery, `list tasks`, and the example plugin package
installed with pip and trained on from its recipe."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from zoo.cli import main
from zoo.plugins import GROUP, check, discover

EXAMPLE = REPO_ROOT / "examples" / "zoo-example-plugin"


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs pass their arguments explicitly; hide pytest's own argv from LightningCLI."""
    monkeypatch.setattr(sys, "argv", ["zoo"])


def fake_distribution(root: Path, name: str, entry_points: dict[str, str]) -> Path:
    """A distribution's installed metadata (what pip writes), so `importlib.metadata` finds its entry points."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    return root


def test_broken_plugins_are_reported_not_fatal(tmp_path, monkeypatch, capsys) -> None:
    entries = {"masked": "fake_tasks:Masked", "missing": "no_such_module_zoo:Task", "not_a_task": "collections:Counter"}
    monkeypatch.syspath_prepend(str(fake_distribution(tmp_path, "zoo-fake-plugins", entries)))
    found = {plugin.name: plugin for plugin in discover()}
    assert found["masked"].package == "zoo-fake-plugins 1.0" and found["masked"].class_path == "fake_tasks.Masked"
    assert check(found["masked"]).ok
    assert "ModuleNotFoundError" in check(found["missing"]).error
    assert "not a zoo.task.Task subclass" in check(found["not_a_task"]).error

    assert main(["list", "tasks"]) == 0
    captured = capsys.readouterr()
    lines = {line.split()[0]: line for line in captured.out.splitlines()[1:]}
    assert lines["masked"].rstrip().endswith("ok") and "zoo-fake-plugins 1.0" in lines["masked"]
    assert "broken: ModuleNotFoundError" in lines["missing"]
    assert "broken: TypeError" in lines["not_a_task"]
    assert "failed to import" in captured.err


def test_example_plugin_installs_lists_and_trains_from_its_recipe(tmp_path, monkeypatch, capsys) -> None:
    source = shutil.copytree(EXAMPLE, tmp_path / "source")  # pip builds in the source tree: keep the repo clean
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
    )
    monkeypatch.syspath_prepend(str(target))

    assert main(["list", "tasks"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("checkerboard_inversion"))
    assert "zoo-example-plugin 0.1.0" in line and "zoo_example_plugin.checkerboard.CheckerboardInversion" in line
    assert line.rstrip().endswith("ok")

    root = tmp_path / "run"
    argv = [
        "fit",
        "--config",
        str(EXAMPLE / "recipe.yaml"),
        "--trainer.max_steps",
        "2",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.limit_val_batches",
        "0",
        "--data.batch_size",
        "2",
    ]
    assert main(argv) == 0
    assert list(root.rglob("epoch=0-step=2.ckpt")), "two training steps on the plugin task"
