"""Text-to-image: a caption in, its image out; no context. Natural images and art, as the paper's Txt2Img rows.

Owns the `TextToImage` task plugin. `flavour` picks the paper's two text-to-image data kinds (Table 1 rows 1-2):
"natural" (templates tasks/templates/text_to_image.txt) and "art" (text_to_image_art.txt, e.g. "Generate this
artwork: ..."), both with one placeholder, {caption}.

- World, natural: example i is world scene i, drawn in the "flat" style.
- World, art: scene i drawn in a style other than flat, and the caption names it ("..., in the neon style"), as
  WikiArt captions name the art style.
- Dataset: columns `image` and `caption` (e.g. a folder of images with a metadata.jsonl).
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from tasks.scoring import caption_checks
from tasks.world import STYLES, DrawsFromWorld, Split, caption, check_split, render
from zoo.instruction import Instruction
from zoo.sources import DatasetSource, fit_square
from zoo.task import TemplatedTask

TEMPLATES = Path(__file__).parent / "templates"
NATURAL_STYLE = "flat"
ART_STYLES = tuple(style for style in STYLES if style != NATURAL_STYLE)


class TextToImage(DrawsFromWorld, TemplatedTask):
    """Args beyond `zoo.task.TemplatedTask`'s:
    flavour: "natural" or "art" (sets the default templates and, in the world, whether a named art style is drawn).
    split: "train" or "eval": which side of the world's content split (`tasks.world.content_split`) the
        built-in examples come from; evaluation sets use "eval", so their scenes were never trained on.
    """

    name = "text_to_image"
    placeholders = frozenset({"caption"})
    columns = ("image", "caption")

    def __init__(
        self,
        num_examples: int | None = None,
        seed: int = 0,
        image_size: int = 32,
        templates: str | None = None,
        source: DatasetSource | None = None,
        flavour: Literal["natural", "art"] = "natural",
        split: Split = "train",
    ) -> None:
        if flavour not in ("natural", "art"):
            raise ValueError(f"flavour must be 'natural' or 'art', got {flavour!r}")
        self.flavour, self.split = flavour, check_split(split)
        self.default_templates = TEMPLATES / ("text_to_image.txt" if flavour == "natural" else "text_to_image_art.txt")
        super().__init__(num_examples, seed, image_size, templates, source)

    def from_world(self, index: int, rng: random.Random) -> Instruction:
        style = NATURAL_STYLE if self.flavour == "natural" else rng.choice(ART_STYLES)
        scene = self.world.scene(index, (style,))
        text = caption(scene) if self.flavour == "natural" else f"{caption(scene)}, in the {style} style"
        # One input, the text: it states every attribute (and, for art, the style).
        conditions = {"text": caption_checks(scene) + (["style"] if self.flavour == "art" else [])}
        return Instruction(
            text=self.fill(rng, caption=text),
            target=render(scene, self.image_size, style),
            task=self.name,
            meta={"caption": caption(scene), "scene": asdict(scene), "style": style, "conditions": conditions},
        )

    def from_rows(self, index: int, rng: random.Random) -> Instruction:
        row = self.index[index]
        text = self.rows.text(row, "caption")
        return Instruction(
            text=self.fill(rng, caption=text),
            target=fit_square(self.rows.image(row, "image"), self.image_size),
            task=self.name,
            meta={"caption": text, "row_id": self.rows.row_id(row)},
        )
