"""Control-to-image: draw a caption following a condition map — depth, mask, edge or sketch (the paper's Control2Img).

Owns the `Control` task plugin, `control_map` (the world's condition maps, also used by the zero-shot sets) and
`control_caption`. Templates: tasks/templates/control.txt, with the placeholders {condition} (e.g. "edge map") and
{caption} and the literal marker [ref#1]; the context is one item, "[ref#1] <condition>" (the paper: "different text
instructions as prefixes to hint the model about the scope of the task").

- World: the target is scene i drawn flat; the condition is derived from the scene: `depth_map` (nearer =
  brighter), `object_mask` (silhouettes), edges (Canny, randomly dilated, of the render, the depth map or the mask,
  as the paper's "coarse-grained and fine-grained contour images") or `sketch` (jittered dark outlines on white).
  The caption names only what a map cannot show — each object's colour and pattern, in reading order (left to
  right, top to bottom), and the background — never its shape, position or size, as real control captions do not
  spell out pixel geometry: the geometry can only come from the map.
- Dataset: columns `image` and `caption`, and `control`, the condition map, when the dataset has one. Without it,
  edges and sketches are computed from the image by `tasks.annotators` (Canny; HED needs local weights), while
  depth and mask controls need the column (no depth or salient-object model is available offline).
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from PIL import Image

from tasks.annotators import canny_edges, edge_annotator, sketch_lines
from tasks.scoring import object_checks
from tasks.world import (
    DrawsFromWorld,
    Scene,
    Split,
    caption,
    check_split,
    depth_map,
    object_mask,
    render,
    sketch,
)
from zoo.instruction import ContextItem, Instruction
from zoo.sources import DatasetSource, fit_square
from zoo.task import TemplatedTask

MARKER = "[ref#1]"
STYLE = "flat"
Condition = Literal["depth", "mask", "edge", "sketch"]
CONDITION_TEXT = {"depth": "depth map", "mask": "mask", "edge": "edge map", "sketch": "sketch"}


def control_map(
    condition: str, scene: Scene, size: int, rng: random.Random, geometry_only: bool = False
) -> Image.Image:
    """The world's `condition` map of `scene` at size × size (edges and sketches draw their jitter from `rng`).

    With `geometry_only`, edges come from the depth map or the mask, never the picture, so the map shows where the
    objects are and their outline but not their fill pattern (for compositions whose look comes from elsewhere).
    """
    if condition == "depth":
        return depth_map(scene, size)
    if condition == "mask":
        return object_mask(scene, size)
    if condition == "edge":
        # Edges of the picture (fine), the depth map or the mask (coarse), randomly thickened.
        sources = [depth_map(scene, size), object_mask(scene, size)]
        source = rng.choice(sources if geometry_only else [render(scene, size, STYLE), *sources])
        return canny_edges(source, rng)
    if condition == "sketch":
        return sketch(scene, size, rng)
    raise ValueError(f"condition must be one of {list(CONDITION_TEXT)}, got {condition!r}")


def control_caption(scene: Scene) -> str:
    """E.g. "a red striped object and a blue dotted object, on a sky background": what no condition map shows."""
    articles = ["an" if obj.colour[0] in "aeiou" else "a" for obj in scene.objects]
    objects = " and ".join(f"{a} {obj.colour} {obj.pattern} object" for a, obj in zip(articles, scene.objects))
    return f"{objects}, on a {scene.background} background"


class Control(DrawsFromWorld, TemplatedTask):
    """Args beyond `zoo.task.TemplatedTask`'s:
    condition: "depth", "mask", "edge" or "sketch"; the task is named "<condition>_to_image".
    edge_detector: the annotator for edges computed from dataset images: "canny" (or "hed", with `hed_weights`).
    hed_weights: local path to HED weights, for edge_detector "hed".
    split: "train" or "eval": which side of the world's content split (`tasks.world.content_split`) the
        built-in examples come from; evaluation sets use "eval", so their scenes were never trained on.
    """

    default_templates = Path(__file__).parent / "templates" / "control.txt"
    placeholders = frozenset({"condition", "caption"})
    markers = (MARKER,)
    columns = ("image", "caption")
    optional_columns = ("control",)

    def __init__(
        self,
        num_examples: int | None = None,
        seed: int = 0,
        image_size: int = 32,
        templates: str | None = None,
        source: DatasetSource | None = None,
        condition: Condition = "edge",
        edge_detector: Literal["canny", "hed"] = "canny",
        hed_weights: str | None = None,
        split: Split = "train",
    ) -> None:
        if condition not in CONDITION_TEXT:
            raise ValueError(f"condition must be one of {list(CONDITION_TEXT)}, got {condition!r}")
        self.condition, self.name, self.split = condition, f"{condition}_to_image", check_split(split)
        self.edges = edge_annotator(edge_detector, hed_weights)
        super().__init__(num_examples, seed, image_size, templates, source)
        if self.rows is not None and not self.rows.has("control") and condition in ("depth", "mask"):
            raise ValueError(
                f"task {self.name!r}: source {source.path!r} has no control column, and a {condition} map cannot be "
                "computed offline (no depth or salient-object model); map the dataset's "
                f"{CONDITION_TEXT[condition]} column with source.columns, e.g. columns: {{control: <column>}}"
            )

    def from_world(self, index: int, rng: random.Random) -> Instruction:
        scene = self.world.scene(index)
        return Instruction(
            text=self.fill(rng, condition=CONDITION_TEXT[self.condition], caption=control_caption(scene)),
            context=[self._item(control_map(self.condition, scene, self.image_size, rng))],
            target=render(scene, self.image_size, STYLE),
            task=self.name,
            meta={
                "caption": caption(scene),
                "condition": self.condition,
                "scene": asdict(scene),
                "style": STYLE,
                "conditions": {
                    "text": [*object_checks(scene, "colour", "pattern"), "background"],
                    "control": object_checks(scene, "shape", "position", "size"),
                },
            },
        )

    def from_rows(self, index: int, rng: random.Random) -> Instruction:
        row = self.index[index]
        text = self.rows.text(row, "caption")
        image = fit_square(self.rows.image(row, "image"), self.image_size)
        if self.rows.has("control"):
            resample = Image.Resampling.NEAREST if self.condition == "mask" else Image.Resampling.BICUBIC
            control = fit_square(self.rows.image(row, "control"), self.image_size, resample)
        elif self.condition == "edge":
            control = self.edges(image, rng)
        else:  # sketch: thin dark lines on white
            control = sketch_lines(image)
        return Instruction(
            text=self.fill(rng, condition=CONDITION_TEXT[self.condition], caption=text),
            context=[self._item(control)],
            target=image,
            task=self.name,
            meta={"caption": text, "condition": self.condition, "row_id": self.rows.row_id(row)},
        )

    def _item(self, control: Image.Image) -> ContextItem:
        return ContextItem(MARKER, f"{MARKER} {CONDITION_TEXT[self.condition]}", control)
