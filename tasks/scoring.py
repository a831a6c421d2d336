"""Automatic scoring of images made for built-in world instructions, in the paper's human protocol.

The paper's raters score each *input* of an instruction — the payload text, the style image, the subject, the
control, the content — 0, 0.5 or 1, and "the least consistent condition" decides the semantic-consistency score
(arXiv 2401.01952 §4.1, following ImagenHub). Every world example keeps its ground truth in `instruction.meta`: the
scene (`scene`), the style (`style`) and `conditions`, a map from each input ("text", or a kind of reference:
"style", "subject", "control", "content", "source") to the *checks* that input asks for. This module scores an
image against them, deterministically and with no learned model:

- An attribute check ("object0.colour", "object1.position", "background", "style", ...) renders the true scene and
  counterfactuals that differ only in that attribute (every other colour, shape, position, ...; the object removed;
  every other style) and passes when the image is nearer to the truth than to every counterfactual. Appearance
  (colour, pattern, background, style) is compared by mean squared error; geometry (shape, position, size) by the
  share of pixels whose foreground/background label differs (foreground: away from the background's own render), so
  a wrong colour does not also fail the shape. An object's colour and pattern are judged where the image actually
  draws it (the best-fitting shape, position and size), so a misplaced object does not also fail its colour.
  Counterfactuals the style cannot show (pattern in line art) render like the truth and are ignored.
- "unedited" (editing) passes when the image is nearer to the edited scene than to the unedited source scene.
- "preserve" (editing) grades how well the image keeps the source outside the edited region: mean absolute error
  ≤ `PRESERVE_GOOD` → 1, ≤ `PRESERVE_FAIR` → 0.5, else 0. An edit's "source" input also checks that every object
  the edit leaves alone is still there (a blank canvas is close in pixels to a scene with one small object).

An input scores 1 when all its checks pass, 0.5 when more than half do (`PARTIAL`), 0 otherwise; SC is the minimum
over inputs. Beside the inputs, every check is reported under its attribute kind (`ATTRIBUTES`: colour, shape, ...;
the geometry checks of a control input as "control geometry", the look checks of a subject as "subject identity",
an edit's checks as "edit"), so partial learning is visible where SC is still 0. These are proxies for a rater's
judgement, and only exist for world examples (dataset rows carry no scene).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from tasks.world import (
    BACKGROUNDS,
    COLOURS,
    PATTERNS,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLES,
    SUBJECT_SHAPES,
    Scene,
    SceneObject,
    render,
    render_background,
)
from zoo.eval.suite import Rating

# Mean absolute error (0-255 scale) outside the edited region for "preserve" to score 1 and 0.5.
PRESERVE_GOOD, PRESERVE_FAIR = 6.0, 16.0
# Two renders closer than this (mean squared error) are the same picture: the style cannot show the difference.
SAME_PICTURE = 1.0
# A pixel is foreground when a channel differs from the background's render by more than this (0-255 scale).
FOREGROUND = 25.0
GEOMETRY = ("shape", "position", "size")
# An input whose checks pass more than this share (but not all) is "partly" satisfied: 0.5 on the ImagenHub scale.
PARTIAL = 0.5
ATTRIBUTES = (
    "colour",
    "shape",
    "pattern",
    "position",
    "size",
    "background",
    "style",
    "control geometry",
    "subject identity",
    "edit",
    "preserve",
)
_CHOICES = {
    "colour": tuple(COLOURS),
    "shape": SHAPES + SUBJECT_SHAPES,
    "pattern": PATTERNS,
    "position": tuple(POSITIONS),
    "size": tuple(SIZES),
}


def object_checks(scene: Scene, *attributes: str, objects: Iterable[int] | None = None) -> list[str]:
    """Checks of `attributes` for each object of `scene` (or those in `objects`): ["object0.colour", ...]."""
    unknown = [a for a in attributes if a not in _CHOICES]
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; known: {list(_CHOICES)}")
    indices = range(len(scene.objects)) if objects is None else objects
    return [f"object{k}.{attribute}" for k in indices for attribute in attributes]


def caption_checks(scene: Scene) -> list[str]:
    """The checks a full world caption states: each object's colour, shape, pattern, position, size; the background."""
    return [*object_checks(scene, *_CHOICES), "background"]


def attribute_kind(condition: str, check: str, editing: bool = False) -> str:
    """Which of `ATTRIBUTES` a check of `condition` reports under."""
    if check == "preserve" or (editing and condition == "source"):
        return "preserve"
    if editing or check == "unedited":
        return "edit"
    attribute = check.rsplit(".", 1)[-1]
    if condition == "control" and attribute in GEOMETRY:
        return "control geometry"
    if condition == "subject" and check.startswith("object"):
        return "subject identity"
    return attribute


def scene_from_dict(data: dict) -> Scene:
    return Scene(data["background"], tuple(SceneObject(**obj) for obj in data["objects"]))


def score(meta: dict, image: torch.Tensor | Image.Image) -> Rating:
    """The rating of `image` for the instruction whose `meta` is given: each input's score (0, 0.5 or 1) and each
    attribute kind's check results.

    Args:
        meta: an instruction's meta from a built-in world task (has "scene", "style" and "conditions").
        image: a PIL image or a tensor (3, H, W) in [-1, 1], square.

    Raises:
        ValueError: when `meta` has no ground truth (e.g. an example read from a dataset).
    """
    if not all(key in meta for key in ("scene", "style", "conditions")):
        raise ValueError("meta has no world ground truth (scene, style, conditions): only world examples can be scored")
    pixels = _pixels(image)
    size = pixels.shape[0]
    truth = scene_from_dict(meta["scene"])
    style = meta["style"]
    source = scene_from_dict(meta["source_scene"]) if "source_scene" in meta else None
    backdrop = _render(truth.background, size, style)

    fitted: Scene | None = None  # the truth as the image places it, found once, for colour and pattern checks
    scores: dict[str, float] = {}
    attributes: dict[str, list[float]] = {}
    for condition, checks in meta["conditions"].items():
        results, grades = [], []  # pass/fail checks; graded ones (preserve), which cap the input's score
        for check in checks:
            kind = attribute_kind(condition, check, editing=source is not None)
            if check == "preserve":
                grades.append(_preserve(pixels, truth, source, style))
                attributes.setdefault(kind, []).append(grades[-1])
                continue
            if check.rsplit(".", 1)[-1] in GEOMETRY:  # compare silhouettes, whatever their colour

                def view(x: np.ndarray) -> np.ndarray:
                    return (np.abs(x - backdrop).max(axis=-1) > FOREGROUND).astype(np.float32)
            else:

                def view(x: np.ndarray) -> np.ndarray:
                    return x

            scene = truth
            if check.startswith("object") and check.rsplit(".", 1)[-1] in ("colour", "pattern"):
                fitted = fitted or _placed(truth, pixels, backdrop, style)
                scene = fitted
            seen, expected = view(pixels), view(_render(scene, size, style))
            variants = [view(_render(variant, size, s)) for variant, s in _variants(check, scene, style, source)]
            variants = [v for v in variants if np.any(v != expected) and _mse(v, expected) > SAME_PICTURE / 1e4]
            if variants:
                results.append(1.0 if _mse(seen, expected) < min(_mse(seen, v) for v in variants) else 0.0)
                attributes.setdefault(kind, []).append(results[-1])
        if results or grades:
            scores[condition] = min([_combine(results)] * bool(results) + grades)
    return Rating(conditions=scores, attributes=attributes)


def overall(rating: Rating) -> float:
    """The least satisfied input decides (the paper's semantic-consistency rule)."""
    if not rating.conditions:
        raise ValueError("no condition was scored")
    return min(rating.conditions.values())


def _combine(results: list[float]) -> float:
    if all(r == 1 for r in results):
        return 1.0
    return 0.5 if sum(results) / len(results) > PARTIAL else 0.0


def _variants(check: str, truth: Scene, style: str, source: Scene | None):
    """(scene or background-only marker, style) pairs that differ from the truth only in what `check` names."""
    if check == "style":
        return [(truth, other) for other in STYLES if other != style]
    if check == "background":
        return [(Scene(b, truth.objects), style) for b in BACKGROUNDS if b != truth.background]
    if check == "unedited":
        if source is None:
            raise ValueError("check 'unedited' needs meta['source_scene']")
        return [(source, style)]
    if not check.startswith("object") or "." not in check:
        raise ValueError(f"unknown check {check!r}")
    head, attribute = check.split(".", 1)
    k = int(head.removeprefix("object"))
    obj = truth.objects[k]
    others = [o for i, o in enumerate(truth.objects) if i != k]
    taken = {o.position for o in others}
    variants = []
    for value in _CHOICES[attribute]:
        if value == getattr(obj, attribute) or (attribute == "position" and value in taken):
            continue
        changed = SceneObject(**{**obj.__dict__, attribute: value})
        variants.append((Scene(truth.background, (*truth.objects[:k], changed, *truth.objects[k + 1 :])), style))
    # The object removed: an image without it must not pass any check about it.
    variants.append((Scene(truth.background, tuple(others)) if others else truth.background, style))
    return variants


def _placed(truth: Scene, pixels: np.ndarray, backdrop: np.ndarray, style: str) -> Scene:
    """`truth` with each object, in turn, moved to the shape, position and size whose silhouette best fits the image
    (the objects placed before it stay where they were fitted)."""
    size = pixels.shape[0]

    def silhouette(x: np.ndarray) -> np.ndarray:
        return np.abs(x - backdrop).max(axis=-1) > FOREGROUND

    seen = silhouette(pixels)
    fitted = truth
    for k, obj in enumerate(truth.objects):
        taken = {o.position for i, o in enumerate(fitted.objects) if i != k}
        best, best_distance = fitted, np.mean(silhouette(_render(fitted, size, style)) != seen)
        for shape in _CHOICES["shape"]:
            for position in (p for p in _CHOICES["position"] if p not in taken):
                for extent in _CHOICES["size"]:
                    moved = SceneObject(shape, obj.colour, obj.pattern, position, extent)
                    scene = Scene(truth.background, (*fitted.objects[:k], moved, *fitted.objects[k + 1 :]))
                    distance = np.mean(silhouette(_render(scene, size, style)) != seen)
                    if distance < best_distance:  # strictly better: on a tie the current placement stays
                        best, best_distance = scene, distance
        fitted = best
    return fitted


def _preserve(pixels: np.ndarray, truth: Scene, source: Scene | None, style: str) -> float:
    if source is None:
        raise ValueError("check 'preserve' needs meta['source_scene']")
    size = pixels.shape[0]
    before, after = _render(source, size, style), _render(truth, size, style)
    changed = np.abs(before - after).max(axis=-1) > 0
    # One pixel of margin: antialiased edges of the edited object reach just past where the renders differ.
    padded = np.pad(changed, 1)
    region = np.zeros_like(changed)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            region |= padded[dy : dy + size, dx : dx + size]
    if region.all():
        return 1.0
    error = np.abs(pixels - before)[~region].mean()
    return 1.0 if error <= PRESERVE_GOOD else 0.5 if error <= PRESERVE_FAIR else 0.0


@lru_cache(maxsize=8192)
def _render(scene: Scene | str, size: int, style: str) -> np.ndarray:
    image = render_background(scene, size, style) if isinstance(scene, str) else render(scene, size, style)
    array = np.asarray(image, dtype=np.float32)
    array.setflags(write=False)
    return array


def _pixels(image: torch.Tensor | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"), dtype=np.float32)
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image: expected a tensor (3, H, W) in [-1, 1], got shape {tuple(image.shape)}")
        array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    else:
        raise TypeError(f"image: expected a PIL image or a tensor, got {type(image).__name__}")
    if array.shape[0] != array.shape[1]:
        raise ValueError(f"image: expected a square image, got {array.shape[1]}x{array.shape[0]}")
    return array


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))
