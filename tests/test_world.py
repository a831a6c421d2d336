"""Tests of the built-in world (tasks/world.py): determinism, captions, subjects and render styles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from tasks.world import (
    COLOURS,
    PATTERNS,
    SHAPES,
    STYLES,
    SUBJECTS,
    Scene,
    SceneObject,
    World,
    caption,
    render,
    subject,
    subject_scene,
)

SCENES = [World(0).scene(index) for index in range(16)]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def test_scene_is_a_pure_function_of_seed_and_index() -> None:
    assert [World(0).scene(index) for index in range(16)] == SCENES
    assert World(3).scene(7) == World(3).scene(7)
    assert render(SCENES[5], 32, "neon").tobytes() == render(World(0).scene(5), 32, "neon").tobytes()


def test_different_seeds_give_different_scenes() -> None:
    other = [World(1).scene(index) for index in range(16)]
    assert sum(a != b for a, b in zip(SCENES, other)) >= 12


def test_scenes_vary_and_objects_are_told_apart_by_colour() -> None:
    scenes = [World(0).scene(index) for index in range(200)]
    assert {len(scene.objects) for scene in scenes} == {1, 2}
    for attribute, known in [("shape", SHAPES), ("colour", COLOURS), ("pattern", PATTERNS)]:
        assert {getattr(obj, attribute) for scene in scenes for obj in scene.objects} == set(known)
    for scene in scenes:
        assert len({obj.colour for obj in scene.objects}) == len(scene.objects)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("size", [16, 32, 64])
def test_every_style_renders_rgb_at_the_asked_size(style: str, size: int) -> None:
    image = render(SCENES[1], size, style)
    assert image.mode == "RGB"
    assert image.size == (size, size)


def test_styles_differ_visibly_on_the_same_scene() -> None:
    images = {style: np.stack([pixels(render(scene, 32, style)) for scene in SCENES]) for style in STYLES}
    for a, b in itertools.combinations(STYLES, 2):
        per_scene = np.abs(images[a] - images[b]).mean(axis=(1, 2, 3))
        # Every scene differs; on average by a clear margin (a small object on white leaves the least to restyle).
        assert per_scene.min() > 3, (a, b, per_scene.min())
        assert per_scene.mean() > 10, (a, b, per_scene.mean())


def test_objects_are_drawn_where_the_scene_says() -> None:
    scene = Scene("white", (SceneObject("square", "red", "solid", "left", "large"),))
    image = pixels(render(scene, 32))
    assert image[16, 8].tolist() == pytest.approx(list(COLOURS["red"]), abs=2)
    assert image[16, 24].tolist() == pytest.approx([250, 250, 250], abs=2)


def test_caption_names_every_object_colour_shape_and_the_background() -> None:
    for scene in SCENES:
        text = caption(scene)
        for obj in scene.objects:
            assert obj.colour in text and obj.shape in text and obj.pattern in text
        assert text.endswith(f"on a {scene.background} background")
    scene = Scene("sky", (SceneObject("circle", "red", "striped", "left", "large"),))
    assert caption(scene) == "a large red striped circle on the left, on a sky background"


def test_subjects_keep_their_identity_wherever_they_are_placed() -> None:
    assert len(SUBJECTS) >= 8
    identities = {(s.shape, s.colour, s.pattern) for s in SUBJECTS.values()}
    assert len(identities) == len(SUBJECTS)
    zib = subject("zib")
    for placement in [("left", "small", "pink"), ("bottom", "large", "mint")]:
        (obj,) = subject_scene("zib", *placement).objects
        assert (obj.shape, obj.colour, obj.pattern) == (zib.shape, zib.colour, zib.pattern)
        assert (obj.position, obj.size) == placement[:2]


def test_bad_names_and_sizes_are_value_errors_naming_the_field() -> None:
    with pytest.raises(ValueError, match="unknown style 'watercolour'; known: flat"):
        render(SCENES[0], 32, "watercolour")
    with pytest.raises(ValueError, match="size"):
        render(SCENES[0], 4)
    with pytest.raises(ValueError, match="unknown subject 'nobody'"):
        subject("nobody")
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        SceneObject("circle", "teal", "solid", "left", "small")
    with pytest.raises(ValueError, match="share a position"):
        obj = SceneObject("circle", "red", "solid", "left", "small")
        Scene("white", (obj, obj))
