"""Tests of the automatic scorer: ground truth scores 1 everywhere; a wrong attribute lowers that condition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.editing import Editing
from tasks.scoring import overall, score
from tasks.styled_generation import StyledGeneration
from tasks.text_to_image import TextToImage
from tasks.world import Scene, SceneObject, render, render_background
from test_tasks import FACTORIES

SCENE = Scene("sky", (SceneObject("circle", "red", "striped", "left", "large"),
                      SceneObject("square", "blue", "solid", "right", "small")))


def meta_for(scene: Scene, style: str = "flat") -> dict:
    from dataclasses import asdict

    from tasks.scoring import caption_conditions

    return {"scene": asdict(scene), "style": style, "conditions": {**caption_conditions(scene), "style": ["style"]}}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_the_ground_truth_target_scores_one_on_every_condition(name: str) -> None:
    task = FACTORIES[name](num_examples=6, image_size=32)
    for index in range(len(task)):
        instruction = task[index]
        scores = score(instruction.meta, instruction.target)
        assert scores and all(value == 1.0 for value in scores.values()), (name, index, scores)
        assert overall(scores) == 1.0


def test_a_wrong_colour_position_or_style_lowers_only_that_condition() -> None:
    meta = meta_for(SCENE)
    assert set(score(meta, render(SCENE, 32)).values()) == {1.0}
    red_to_green = Scene("sky", (SceneObject("circle", "green", "striped", "left", "large"), SCENE.objects[1]))
    scores = score(meta, render(red_to_green, 32))
    assert scores["colour"] == 0.5 and scores["shape"] == 1 and scores["position"] == 1  # one of two colours wrong
    moved = Scene("sky", (SceneObject("circle", "red", "striped", "bottom", "large"), SCENE.objects[1]))
    scores = score(meta, render(moved, 32))
    assert scores["position"] == 0.5 and scores["colour"] == 1
    scores = score(meta, render(SCENE, 32, "neon"))
    assert scores["style"] == 0.0 and overall(scores) == 0.0
    lone = Scene("white", (SceneObject("triangle", "green", "dotted", "center", "large"),))
    wrong = Scene("white", (SceneObject("triangle", "purple", "dotted", "center", "large"),))
    assert score(meta_for(lone), render(wrong, 32))["colour"] == 0.0


def test_empty_and_noise_images_fail() -> None:
    meta = meta_for(SCENE)
    empty = score(meta, render_background("sky", 32))
    assert empty["colour"] == 0 and empty["shape"] == 0 and overall(empty) == 0
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert overall(score(meta, noise)) < 1


def test_styled_generation_in_another_style_fails_the_style_condition() -> None:
    instruction = StyledGeneration(num_examples=1)[0]
    scene = instruction.meta["scene"]
    other = next(s for s in ("flat", "neon") if s != instruction.meta["style"])
    from tasks.scoring import scene_from_dict

    assert score(instruction.meta, render(scene_from_dict(scene), 32, other))["style"] == 0


def test_editing_scores_the_edit_and_what_is_kept() -> None:
    task = Editing(num_examples=20)
    for index in range(len(task)):
        instruction = task[index]
        source = instruction.context[1].image
        unchanged = score(instruction.meta, source)
        assert unchanged["edit"] < 1 and unchanged["preserve"] == 1
        damaged = instruction.target.clone()
        damaged[:, ~(instruction.mask[0] > 0)] = -1  # black outside the mask
        assert score(instruction.meta, damaged)["preserve"] == 0


def test_pil_and_tensor_images_score_alike_and_bad_input_is_an_error() -> None:
    instruction = TextToImage(num_examples=1)[0]
    image = Image.fromarray(((instruction.target.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    assert score(instruction.meta, image) == score(instruction.meta, instruction.target)
    with pytest.raises(ValueError, match="only world examples can be scored"):
        score({"caption": "x", "row_id": 3}, image)
    with pytest.raises(ValueError, match="square"):
        score(instruction.meta, torch.zeros(3, 16, 32))
