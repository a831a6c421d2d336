"""What is particular to the control, style-transfer, editing, retrieval, art and face tasks; shared-base behaviour."""

from __future__ import annotations

import re

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
from tasks.world import SUBJECTS, Scene, SceneObject, render
from zoo.task import load_templates

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
