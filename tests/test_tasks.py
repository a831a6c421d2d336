"""Tests of the built-in world task plugins: every task, then what is particular to each."""

from __future__ import annotations

import re
from functools import partial

import pytest
import torch

from tasks.control import Control
from tasks.editing import Editing
from tasks.retrieval import Retrieval
from tasks.style_transfer import StyleTransfer
from tasks.styled_generation import StyledGeneration
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import TextToImage
from tasks.world import STYLES, SUBJECTS
from tasks.zeroshot import COMPOSITIONS, ZeroShot
from zoo.instruction import Instruction

# Every world task, as a factory taking the common arguments, and the name its instructions carry.
FACTORIES = {
    "text_to_image": TextToImage,
    "text_to_image_art": partial(TextToImage, flavour="art"),
    "styled_generation": StyledGeneration,
    "subject_driven": SubjectDriven,
    **{f"{c}_to_image": partial(Control, condition=c) for c in ("depth", "mask", "edge", "sketch")},
    "style_transfer": StyleTransfer,
    "editing": Editing,
    "retrieval": Retrieval,
    **{f"zeroshot_{c}": partial(ZeroShot, c) for c in COMPOSITIONS},
}
TASKS = list(FACTORIES.values())
NAMES = {factory: name.removesuffix("_art") for name, factory in FACTORIES.items()}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module", params=TASKS, ids=list(FACTORIES))
def built(request: pytest.FixtureRequest) -> tuple[type, list[Instruction]]:
    task = request.param(num_examples=50, seed=0, image_size=32)
    return request.param, [task[index] for index in range(len(task))]


def test_instructions_are_valid_with_task_name_and_target(built: tuple[type, list[Instruction]]) -> None:
    cls, instructions = built
    assert len(instructions) == 50
    for instruction in instructions:
        assert isinstance(instruction, Instruction)
        assert instruction.task == NAMES[cls]
        for image in [instruction.target, *(item.image for item in instruction.context)]:
            assert image.shape == (3, 32, 32) and image.dtype == torch.float32
            assert image.min() >= -1 and image.max() <= 1


@pytest.mark.parametrize("cls", TASKS, ids=list(FACTORIES))
def test_same_seed_same_instruction_and_different_seeds_differ(cls: type) -> None:
    a, b, c = cls(num_examples=5, seed=0), cls(num_examples=5, seed=0), cls(num_examples=5, seed=1)
    for index in range(5):
        x, y = a[index], b[index]
        assert x.text == y.text and x.meta == y.meta and torch.equal(x.target, y.target)
        assert [item.prompt for item in x.context] == [item.prompt for item in y.context]
        assert all(torch.equal(p.image, q.image) for p, q in zip(x.context, y.context))
    assert [a[index].text for index in range(5)] != [c[index].text for index in range(5)]


@pytest.mark.parametrize("cls", TASKS, ids=list(FACTORIES))
def test_image_size_is_honoured(cls: type) -> None:
    instruction = cls(num_examples=1, image_size=16)[0]
    assert instruction.target.shape == (3, 16, 16)
    assert all(item.image.shape == (3, 16, 16) for item in instruction.context)


def matching_templates(templates: list[str], text: str) -> frozenset[int]:
    """Indices of the templates that could have produced `text` (each placeholder matches any text)."""
    patterns = [re.sub(r"\\\{\w+\\\}", "(.+)", re.escape(template)) for template in templates]
    return frozenset(index for index, pattern in enumerate(patterns) if re.fullmatch(pattern, text))


def test_templates_are_many_and_several_are_used(built: tuple[type, list[Instruction]]) -> None:
    cls, instructions = built
    templates = cls().templates
    assert len(templates) >= 20
    matches = [matching_templates(templates, instruction.text) for instruction in instructions]
    assert all(matches)
    # Two payloads that no single template could both have produced: more than one template is in use.
    assert any(not a & b for a in matches for b in matches)


def test_meta_holds_the_ground_truth(built: tuple[type, list[Instruction]]) -> None:
    cls, instructions = built
    for instruction in instructions:
        meta = instruction.meta
        assert meta["scene"]["objects"] and meta["scene"]["background"]
        assert meta["conditions"] and meta["style"] in STYLES
        if cls is TextToImage:
            assert meta["caption"] in instruction.text and meta["style"] == "flat"
        if cls is StyledGeneration:
            assert meta["style"] in STYLES and meta["reference_scene"] != meta["scene"]
        if cls is SubjectDriven:
            identity = SUBJECTS[meta["subject"]]
            expected = (identity.shape, identity.colour, identity.pattern)
            for scene in [meta["scene"], *meta["reference_scenes"]]:
                (obj,) = scene["objects"]
                assert (obj["shape"], obj["colour"], obj["pattern"]) == expected


def test_styled_payload_never_names_the_style() -> None:
    task = StyledGeneration(num_examples=60)
    seen = set()
    for index in range(len(task)):
        instruction = task[index]
        seen.add(instruction.meta["style"])
        assert not words(instruction.text) & set(STYLES), instruction.text
        assert not words(instruction.context[0].prompt) & set(STYLES)
        assert [item.marker for item in instruction.context] == ["[ref#1]"]
        assert instruction.markers == ["[ref#1]"]
    assert seen == set(STYLES)


def test_styled_styles_can_be_held_out() -> None:
    task = StyledGeneration(num_examples=20, styles=["neon", "sepia"])
    assert {task[index].meta["style"] for index in range(20)} == {"neon", "sepia"}


def test_subject_payload_never_describes_the_subject() -> None:
    task = SubjectDriven(num_examples=60)
    counts = set()
    for index in range(len(task)):
        instruction = task[index]
        identity = SUBJECTS[instruction.meta["subject"]]
        leaked = words(instruction.text) & {identity.name, identity.shape, identity.colour, identity.pattern}
        assert not leaked, instruction.text
        assert instruction.markers == ["[ref#1]"]
        assert {item.marker for item in instruction.context} == {"[ref#1]"}
        counts.add(len(instruction.context))
        (target,) = instruction.meta["scene"]["objects"]
        placements = [
            (s["objects"][0]["position"], s["objects"][0]["size"], s["background"])
            for s in instruction.meta["reference_scenes"]
        ]
        assert (target["position"], target["size"], instruction.meta["scene"]["background"]) not in placements
    assert counts == {1, 2}


def test_subject_subjects_can_be_held_out() -> None:
    task = SubjectDriven(num_examples=20, subjects=["zib"])
    assert {task[index].meta["subject"] for index in range(20)} == {"zib"}


@pytest.mark.parametrize("cls", TASKS, ids=list(FACTORIES))
def test_bad_arguments_are_value_errors_naming_the_field(cls: type) -> None:
    with pytest.raises(ValueError, match="num_examples must be at least 1, got 0"):
        cls(num_examples=0)
    with pytest.raises(ValueError, match="image_size"):
        cls(image_size=2)
    with pytest.raises(ValueError, match="does not exist"):
        cls(templates="/nonexistent/templates.txt")
    with pytest.raises(IndexError):
        cls(num_examples=3)[3]


def test_unknown_styles_and_subjects_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match="styles: unknown style.*known: flat"):
        StyledGeneration(styles=["watercolour"])
    with pytest.raises(ValueError, match="subjects: unknown subject.*known: zib"):
        SubjectDriven(subjects=["nobody"])


def test_styled_templates_must_name_the_reference(tmp_path) -> None:
    path = tmp_path / "templates.txt"
    path.write_text("Draw {caption}.\n")
    with pytest.raises(ValueError, match=r"must contain \[ref#1\]"):
        StyledGeneration(templates=str(path))
