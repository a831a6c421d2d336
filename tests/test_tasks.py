"""Tests of the built-in world task plugins: every task through the same checks, then what is particular to each
(styled generation, subject-driven, control, style transfer, editing, retrieval, art and face tasks) and the
shared base's behaviour."""

from __future__ import annotations

import re
from functools import partial

import numpy as np
import pytest
import torch

from tasks.control import Control
from tasks.editing import Editing
from tasks.retrieval import Retrieval
from tasks.style_transfer import StyleTransfer
from tasks.styled_generation import StyledGeneration
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import ART_STYLES, TextToImage
from tasks.world import STYLES, SUBJECTS, Scene, SceneObject, render
from tasks.zeroshot import COMPOSITIONS, ZeroShot
from zoo.instruction import Instruction
from zoo.task import load_templates

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


# ------------------------------------------------------------ control, style transfer, editing, retrieval, art, faces
PAPER_EDIT = "Edit the [ref#1] mask area of the [ref#2] content image and reflect the change: "


def test_two_tasks_with_one_seed_draw_different_streams() -> None:
    a, b = TextToImage(seed=0), StyledGeneration(seed=0)
    assert [a.rng(0, i).random() for i in range(5)] != [b.rng(0, i).random() for i in range(5)]
    assert Control(condition="edge").rng(0, 1).random() != Control(condition="depth").rng(0, 1).random()


def test_templates_need_their_markers_and_placeholders(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("Edit the [ref#1] mask: {change}\n")
    with pytest.raises(ValueError, match=r"t.txt:1: every template must contain \[ref#2\]"):
        Editing(templates=str(path))
    path.write_text("Use the [ref#1] {condition}: {caption} {extra}\n")
    with pytest.raises(ValueError, match=r"placeholders \['caption', 'condition', 'extra'\]"):
        Control(templates=str(path))


def test_art_captions_name_a_non_flat_style() -> None:
    task = TextToImage(flavour="art", num_examples=30)
    styles = set()
    for index in range(len(task)):
        instruction = task[index]
        style = instruction.meta["style"]
        styles.add(style)
        assert style in ART_STYLES and f"in the {style} style" in instruction.text
        assert "style" in instruction.meta["conditions"]["text"]  # the text names the style: its check is the text's
    assert len(styles) >= 3
    with pytest.raises(ValueError, match="flavour must be 'natural' or 'art'"):
        TextToImage(flavour="photo")


@pytest.mark.parametrize(
    "condition, text", [("depth", "depth map"), ("mask", "mask"), ("edge", "edge map"), ("sketch", "sketch")]
)
def test_control_maps_follow_the_scene(condition: str, text: str) -> None:
    task = Control(condition=condition, num_examples=10)
    for index in range(len(task)):
        instruction = task[index]
        (item,) = instruction.context
        assert item.prompt == f"[ref#1] {text}" and f"[ref#1] {text}" in instruction.text
        values = set(item.image.unique().tolist())
        if condition in ("mask", "edge"):
            assert values <= {-1.0, 1.0} and len(values) == 2  # binary, and not empty
        if condition == "mask":  # the mask is white exactly where the target is not background
            inside = item.image[0] > 0
            assert inside.sum() > 0
        if condition == "depth":
            assert torch.equal(item.image[0], item.image[1])  # grayscale
        if condition == "sketch":
            assert item.image.min() < 0 and item.image.mean() > 0.5  # dark lines, mostly white


def test_style_transfer_payload_never_describes_the_content() -> None:
    task = StyleTransfer(num_examples=40)
    for index in range(len(task)):
        instruction = task[index]
        assert [item.prompt for item in instruction.context] == ["a [ref#1] style image", "a [ref#2] content image"]
        scene = instruction.meta["scene"]
        words = set(re.findall(r"[a-z]+", instruction.text.lower()))
        for obj in scene["objects"]:
            assert not words & {obj["colour"], obj["shape"], obj["pattern"]}
        assert instruction.meta["style"] != "flat"
        assert not torch.equal(instruction.target, instruction.context[1].image)


def test_editing_follows_the_paper_and_changes_only_the_mask() -> None:
    task = Editing(num_examples=60)
    kinds, paper = set(), False
    for index in range(len(task)):
        instruction = task[index]
        kinds.add(instruction.meta["edit"])
        paper |= instruction.text.startswith(PAPER_EDIT)
        mask_item, content = instruction.context
        assert (mask_item.prompt, content.prompt) == ("[ref#1] mask", "[ref#2] content image")
        mask = instruction.mask[0] > 0.5
        assert torch.equal(mask_item.image[0] > 0, mask)  # the context mask is the instruction's mask
        source, target = content.image, instruction.target
        assert torch.equal(source[:, ~mask], target[:, ~mask])  # nothing changes outside the mask
        assert (source[:, mask] != target[:, mask]).any()  # and something changes inside it
        assert instruction.meta["change"] in instruction.text
    assert kinds == {"recolour", "reshape", "repattern", "add", "remove"}
    assert paper
    assert load_templates(Editing.default_templates)[0] == PAPER_EDIT + "{change}"


def test_retrieval_neighbours_are_relevant_but_not_duplicated() -> None:
    task = Retrieval(num_examples=30)
    for index in range(len(task)):
        instruction = task[index]
        assert [item.marker for item in instruction.context] == ["[ref#1]", "[ref#2]", "[ref#3]"]
        target = instruction.meta["scene"]
        neighbours = instruction.meta["neighbour_scenes"]
        assert target not in neighbours and len({str(n) for n in neighbours}) == 3
        for neighbour, item in zip(neighbours, instruction.context):
            family = (neighbour["objects"][0]["shape"], neighbour["objects"][0]["colour"])
            assert family == (target["objects"][0]["shape"], target["objects"][0]["colour"])
            assert item.prompt.startswith(item.marker + " a ")  # the neighbour's own caption
            assert not torch.equal(item.image, instruction.target)


def test_face_subjects_are_a_kind_of_their_own() -> None:
    faces = SubjectDriven(kind="face", num_examples=20)
    for index in range(len(faces)):
        instruction = faces[index]
        assert SUBJECTS[instruction.meta["subject"]].shape == "face"
        assert "[ref#1] person" in instruction.text
    toys = SubjectDriven(kind="object", num_examples=20)
    assert all(SUBJECTS[toys[i].meta["subject"]].category == "toy" for i in range(20))
    face = Scene("white", (SceneObject("face", "orange", "solid", "center", "large"),))
    circle = Scene("white", (SceneObject("circle", "orange", "solid", "center", "large"),))
    assert np.abs(np.asarray(render(face, 32), float) - np.asarray(render(circle, 32), float)).mean() > 5


def test_world_only_tasks_refuse_a_source() -> None:
    from tasks.zeroshot import ZeroShot
    from zoo.sources import DatasetSource

    assert ZeroShot.held_out
    with pytest.raises(TypeError):
        ZeroShot(source=DatasetSource(path="x"))
