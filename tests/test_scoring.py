"""Tests of the automatic scorer: ground truth scores 1 everywhere; a wrong attribute lowers the input that asked
for it (1 / 0.5 / 0 by the share of its checks that pass) and shows in that attribute's pass rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_tasks import FACTORIES

from tasks.control import Control
from tasks.editing import Editing
from tasks.scoring import ATTRIBUTES, overall, score
from tasks.styled_generation import StyledGeneration
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import TextToImage
from tasks.world import Scene, SceneObject, render, render_background

SCENE = Scene(
    "sky",
    (
        SceneObject("circle", "red", "striped", "left", "large"),
        SceneObject("square", "blue", "solid", "right", "small"),
    ),
)


def meta_for(scene: Scene, style: str = "flat") -> dict:
    from dataclasses import asdict

    from tasks.scoring import caption_checks

    return {"scene": asdict(scene), "style": style, "conditions": {"text": caption_checks(scene), "style": ["style"]}}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_the_ground_truth_target_scores_one_on_every_condition(name: str) -> None:
    task = FACTORIES[name](num_examples=6, image_size=32)
    for index in range(len(task)):
        instruction = task[index]
        rating = score(instruction.meta, instruction.target)
        assert rating.conditions and all(v == 1.0 for v in rating.conditions.values()), (name, index, rating)
        assert all(r == 1.0 for results in rating.attributes.values() for r in results), (name, index, rating)
        assert set(rating.attributes) <= set(ATTRIBUTES)
        assert overall(rating) == 1.0


def test_a_wrong_attribute_lowers_its_input_by_the_share_of_checks_that_pass() -> None:
    meta = meta_for(SCENE)
    assert score(meta, render(SCENE, 32)).conditions == {"text": 1.0, "style": 1.0}
    red_to_green = Scene("sky", (SceneObject("circle", "green", "striped", "left", "large"), SCENE.objects[1]))
    rating = score(meta, render(red_to_green, 32))
    assert rating.conditions == {"text": 0.5, "style": 1.0}  # 10 of 11 checks pass: partly
    assert rating.attributes["colour"] == [0.0, 1.0] and rating.attributes["shape"] == [1.0, 1.0]
    moved = Scene("sky", (SceneObject("circle", "red", "striped", "bottom", "large"), SCENE.objects[1]))
    rating = score(meta, render(moved, 32))
    assert rating.attributes["position"] == [0.0, 1.0] and rating.attributes["colour"] == [1.0, 1.0]
    rating = score(meta, render(SCENE, 32, "neon"))
    assert rating.conditions["style"] == 0.0 and overall(rating) == 0.0
    lone = Scene("white", (SceneObject("triangle", "green", "dotted", "center", "large"),))
    wrong = Scene("white", (SceneObject("triangle", "purple", "dotted", "center", "large"),))
    assert score(meta_for(lone), render(wrong, 32)).attributes["colour"] == [0.0]


def test_an_input_with_half_or_fewer_checks_passing_scores_zero() -> None:
    lone = Scene("white", (SceneObject("triangle", "green", "dotted", "center", "large"),))
    # colour, shape, pattern, position, size, background: a wrong place and size fails both geometry checks and
    # the shape; colour, pattern and background still pass: 3 of 6 is not more than half.
    moved = Scene("white", (SceneObject("triangle", "green", "dotted", "left", "small"),))
    rating = score(meta_for(lone), render(moved, 32))
    assert sum(r for results in rating.attributes.values() for r in results) <= 4
    assert rating.conditions["text"] == 0.0


def test_empty_and_noise_images_fail() -> None:
    meta = meta_for(SCENE)
    empty = score(meta, render_background("sky", 32))
    assert empty.attributes["colour"] == [0.0, 0.0] and empty.attributes["shape"] == [0.0, 0.0]
    assert overall(empty) == 0
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert overall(score(meta, noise)) < 1


def test_checks_are_reported_under_the_input_they_serve() -> None:
    control = Control(num_examples=1, condition="depth")[0]
    rating = score(control.meta, control.target)
    assert set(rating.conditions) == {"text", "control"}
    assert {"control geometry", "colour", "pattern", "background"} <= set(rating.attributes)
    assert "shape" not in rating.attributes and "position" not in rating.attributes  # the map's, not the text's
    subject = SubjectDriven(num_examples=1)[0]
    rating = score(subject.meta, subject.target)
    assert set(rating.conditions) == {"text", "subject"}
    assert {"subject identity", "position", "size", "background"} == set(rating.attributes)
    edit = Editing(num_examples=1)[0]
    assert set(score(edit.meta, edit.target).attributes) == {"edit", "preserve"}


def test_styled_generation_in_another_style_fails_the_style_condition() -> None:
    instruction = StyledGeneration(num_examples=1)[0]
    scene = instruction.meta["scene"]
    other = next(s for s in ("flat", "neon") if s != instruction.meta["style"])
    from tasks.scoring import scene_from_dict

    assert score(instruction.meta, render(scene_from_dict(scene), 32, other)).conditions["style"] == 0


def test_editing_scores_the_edit_and_what_is_kept() -> None:
    task = Editing(num_examples=20)
    for index in range(len(task)):
        instruction = task[index]
        source = instruction.context[1].image
        unchanged = score(instruction.meta, source).conditions
        assert unchanged["text"] < 1 and unchanged["source"] == 1
        damaged = instruction.target.clone()
        damaged[:, ~(instruction.mask[0] > 0)] = -1  # black outside the mask
        assert score(instruction.meta, damaged).conditions["source"] == 0


def test_pil_and_tensor_images_score_alike_and_bad_input_is_an_error() -> None:
    instruction = TextToImage(num_examples=1)[0]
    image = Image.fromarray(((instruction.target.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    assert score(instruction.meta, image) == score(instruction.meta, instruction.target)
    with pytest.raises(ValueError, match="only world examples can be scored"):
        score({"caption": "x", "row_id": 3}, image)
    with pytest.raises(ValueError, match="square"):
        score(instruction.meta, torch.zeros(3, 16, 32))
