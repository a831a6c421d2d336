"""Tests of the zero-shot compositions: their context combines two kinds of condition, which no training task does."""

from __future__ import annotations

import pytest
from test_tasks import FACTORIES

from tasks.zeroshot import COMPOSITIONS, ZeroShot
from zoo.instruction import Instruction

CONTROL_TEXTS = ("depth map", "mask", "edge map", "sketch")


def signature(instruction: Instruction) -> frozenset[tuple[str, str]]:
    """(marker, kind) of each context item: style, content, control, subject (a toy or a person) or neighbour."""
    kinds = set()
    for item in instruction.context:
        text = item.prompt.replace(item.marker, "").strip()
        if text.endswith("style image"):
            kind = "style"
        elif text.endswith("content image"):
            kind = "content"
        elif text in CONTROL_TEXTS:
            kind = "control"
        elif text in ("toy", "person"):
            kind = "subject"
        else:
            kind = "neighbour"
        kinds.add((item.marker, kind))
    return frozenset(kinds)


EXPECTED = {
    "style_subject": {("[ref#1]", "subject"), ("[ref#2]", "style")},
    "multi_subject": {("[ref#1]", "subject"), ("[ref#2]", "subject")},
    "control_subject": {("[ref#1]", "subject"), ("[ref#2]", "control")},
    "control_style": {("[ref#1]", "control"), ("[ref#2]", "style")},
}


@pytest.mark.parametrize("composition", list(COMPOSITIONS))
def test_each_composition_combines_two_conditions(composition: str) -> None:
    task = ZeroShot(composition, num_examples=20)
    assert len(task) == 20 and task.name == f"zeroshot_{composition}" and task.held_out
    for index in range(len(task)):
        instruction = task[index]
        assert signature(instruction) == EXPECTED[composition]
        assert sorted(instruction.markers) == ["[ref#1]", "[ref#2]"]
    assert len(ZeroShot(composition)) == 100  # the paper's sets hold 99-132 examples


def test_no_training_task_ever_makes_a_zero_shot_composition() -> None:
    """Disjoint by construction: training instructions carry at most one kind of condition besides content."""
    held_out = {frozenset(s) for s in EXPECTED.values()}
    for name, factory in FACTORIES.items():
        if name.startswith("zeroshot_"):
            continue
        task = factory(num_examples=60, image_size=16)
        for index in range(len(task)):
            assert signature(task[index]) not in held_out, (name, index)


def test_zero_shot_scenes_come_from_their_own_world() -> None:
    from tasks.control import Control

    held_out = ZeroShot("control_style", num_examples=30, image_size=16)
    training = Control(condition="depth", num_examples=30, image_size=16)
    same = sum(held_out[i].meta["scene"] == training[i].meta["scene"] for i in range(30))
    assert same <= 1


def test_bad_compositions_and_subjects_are_value_errors() -> None:
    with pytest.raises(ValueError, match="composition must be one of"):
        ZeroShot("style_style")
    with pytest.raises(ValueError, match="needs at least two subjects"):
        ZeroShot("multi_subject", subjects=["zib"])
    with pytest.raises(ValueError, match="unknown style"):
        ZeroShot("control_style", styles=["flat"])
