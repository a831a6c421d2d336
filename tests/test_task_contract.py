"""The task plugin contract, run on every registered task: this project's (`[project.entry-points."zoo.tasks"]` in
pyproject.toml) and every installed package's (`zoo.tasks` entry points).

For each task a tiny instance yields valid, reproducible instructions with targets, the data module collates them,
and the tiny model trains one step on them. A task whose defaults need data on disk provides a classmethod
`contract_sample(directory: Path) -> Task` that builds a small instance offline (writing any files under
`directory`); otherwise the task is built with its defaults.
"""

from __future__ import annotations

import tomllib

import pytest
import torch
from conftest import IMAGE_SIZE, REPO_ROOT

from zoo.instruction import Instruction, InstructionBatch, collate_instructions
from zoo.lit.data import InstructionDataModule
from zoo.plugins import GROUP, TaskPlugin, discover
from zoo.task import Task


def registered() -> dict[str, TaskPlugin]:
    """Other packages' plugins, plus this checkout's own tasks read from its pyproject.toml (the installed `zoo`
    metadata may come from another checkout, so its entry points are not trusted here)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["entry-points"][GROUP]
    plugins = {plugin.name: plugin for plugin in discover() if plugin.distribution != "zoo"}
    plugins.update({name: TaskPlugin(name, value, "zoo") for name, value in project.items()})
    return dict(sorted(plugins.items()))


PLUGINS = registered()


@pytest.fixture(scope="module")
def model():
    from conftest import build_tiny_model

    return build_tiny_model()


def build(plugin: TaskPlugin, directory) -> Task:
    cls = plugin.load()
    sample = getattr(cls, "contract_sample", None)
    return sample(directory) if sample is not None else cls()


def test_the_project_tasks_are_registered() -> None:
    assert {"text_to_image", "styled_generation", "subject_driven"} <= set(PLUGINS)


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
@pytest.mark.parametrize("name", list(PLUGINS))
def test_task_contract(name: str, model, tmp_path) -> None:
    plugin = PLUGINS[name]
    task = build(plugin, tmp_path)
    assert isinstance(task, Task) and len(task) >= 2
    first = [task[index] for index in range(min(4, len(task)))]
    for instruction in first:
        assert isinstance(instruction, Instruction) and instruction.task == task.name
        assert instruction.target is not None, "training needs a target"
    again = task[0]
    assert again.text == first[0].text and torch.equal(again.target, first[0].target), "task[i] must be deterministic"

    if getattr(task, "held_out", False):  # evaluation-only sets never enter a training mixture: collate directly
        with pytest.raises(ValueError, match="held-out"):
            InstructionDataModule([task], image_size=IMAGE_SIZE)
        batch = collate_instructions([i.resized(IMAGE_SIZE) for i in first[:2]])
    else:
        data = InstructionDataModule(
            [task], image_size=IMAGE_SIZE, batch_size=2, samples_per_epoch=2, val_samples=2, val_fraction=0.5
        )
        batch = next(iter(data.train_dataloader()))
    assert isinstance(batch, InstructionBatch) and batch.target.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    before = model.model.unet.conv_in.weight.detach().clone()
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    assert not torch.equal(model.model.unet.conv_in.weight, before)
