"""Styled generation: draw a caption in the style of a reference image, whose style the payload never names.

Owns the `StyledGeneration` task plugin. Templates: tasks/templates/styled_generation.txt, with the placeholder
{caption} and the literal marker [ref#1]; the context is one item, "a [ref#1] style image".

- World: example i is world scene i and a different reference scene, both rendered in one style S; the target is
  scene i in style S.
- Dataset: columns `style_image`, `image` (the target, already in that style) and `caption` — the shape of the
  paper's StyleDrop-generated data (Table 1 row 10).
- Dataset with `pair_by: <column>`: an art collection with no style references of its own (WikiArt: `image`,
  `artist`, `style`, `genre`). Rows sharing that column's value (the same artist, or the same style) are paired:
  each row is a target, and another row of its group — drawn per example, never the row itself — is its style
  reference; rows whose value is missing or listed in `pair_exclude`, and groups of one, make no example. Columns:
  `image`, `caption` and the `pair_by` column (a `datasets.ClassLabel` reads as its names). WikiArt has no
  captions: `columns: {caption: genre}` captions each painting by its genre ("portrait", "landscape"); a caption
  that names the style (pairing by `style` and captioning by `style`) would give away what the reference is there
  to show.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from tasks.scoring import caption_checks
from tasks.world import STYLES, DrawsFromWorld, Split, caption, check_split, render
from zoo.instruction import ContextItem, Instruction
from zoo.sources import DatasetSource, fit_square
from zoo.task import TemplatedTask

MARKER = "[ref#1]"
STYLE_TEXT = f"a {MARKER} style image"


def check_styles(styles: list[str] | None, field: str = "styles", allowed: tuple[str, ...] = STYLES) -> list[str]:
    """The styles to draw from (None: all of `allowed`), checked against the world's."""
    chosen = list(allowed if styles is None else styles)
    if not chosen:
        raise ValueError(f"{field} must name at least one style, got an empty list")
    unknown = [style for style in chosen if style not in allowed]
    if unknown:
        raise ValueError(f"{field}: unknown style(s) {unknown}; known: {', '.join(allowed)}")
    return chosen


class StyledGeneration(DrawsFromWorld, TemplatedTask):
    """Args beyond `zoo.task.TemplatedTask`'s:
    styles: the world styles to draw from (None: all of `tasks.world.STYLES`), so some can be held out of
        training and evaluated zero-shot.
    split: "train" or "eval": which side of the world's content split (`tasks.world.content_split`) the
        built-in examples come from; evaluation sets use "eval", so their scenes were never trained on.
    pair_by: dataset: a column (e.g. "artist" or "style") whose rows are paired as (style reference, target),
        instead of reading a `style_image` column (see the module docstring).
    pair_exclude: values of the `pair_by` column that name no one style, whose rows are never paired: WikiArt's
        "Unknown Artist" gathers paintings by many hands.
    """

    name = "styled_generation"
    default_templates = Path(__file__).parent / "templates" / "styled_generation.txt"
    placeholders = frozenset({"caption"})
    markers = (MARKER,)
    columns = ("style_image", "image", "caption")

    def __init__(
        self,
        num_examples: int | None = None,
        seed: int = 0,
        image_size: int = 32,
        templates: str | None = None,
        source: DatasetSource | None = None,
        styles: list[str] | None = None,
        split: Split = "train",
        pair_by: str | None = None,
        pair_exclude: list[str] | None = None,
    ) -> None:
        self.styles, self.split, self.pair_by = check_styles(styles), check_split(split), pair_by
        self.pair_exclude = set(pair_exclude or ())
        if self.pair_exclude and pair_by is None:
            raise ValueError("pair_exclude names values of the pair_by column; set pair_by, or remove pair_exclude")
        if pair_by is not None:
            if source is None:
                raise ValueError(f"pair_by {pair_by!r} pairs the rows of a dataset; set a source, or remove pair_by")
            if not isinstance(pair_by, str) or not pair_by or pair_by in ("image", "caption"):
                raise ValueError(f"pair_by must name a column such as 'artist' or 'style', got {pair_by!r}")
            self.columns = ("image", "caption", pair_by)  # no style_image: another row of the group is the style
        super().__init__(num_examples, seed, image_size, templates, source)

    def index_rows(self) -> list:
        """Without `pair_by`, row i; with it, (position in group, the group's rows) for every row of a group of ≥ 2."""
        if self.pair_by is None:
            return super().index_rows()
        classes = self.rows.classes(self.pair_by)
        excluded = {None, ""} | self.pair_exclude
        if classes is not None:  # values are class indices: -1 is "no label"
            excluded |= {-1} | {k for k, name in enumerate(classes) if {name, name.replace("_", " ")} & excluded}
        groups: dict[object, list[int]] = defaultdict(list)
        for row, value in enumerate(self.rows.column(self.pair_by)):
            try:
                if value not in excluded:
                    groups[value].append(row)
            except TypeError:
                raise ValueError(
                    f"pair_by {self.pair_by!r}: rows hold {type(value).__name__} values, which cannot be compared; "
                    "pair by a column of names or ids"
                ) from None
        # One shared list per group: pairing by style puts thousands of WikiArt paintings in one group. In row order,
        # so num_examples keeps the first rows rather than the first groups.
        index = [
            (position, members) for members in groups.values() if len(members) > 1 for position in range(len(members))
        ]
        return sorted(index, key=lambda entry: entry[1][entry[0]])

    def from_world(self, index: int, rng: random.Random) -> Instruction:
        style = rng.choice(self.styles)
        scene = self.world.scene(index, (style,))
        reference = scene
        while reference == scene:  # a different scene, so the only thing to take from the reference is its style
            reference = self.world.scene(rng.randrange(2**31), (style,))
        text = caption(scene)
        return Instruction(
            text=self.fill(rng, caption=text),
            context=[ContextItem(MARKER, STYLE_TEXT, render(reference, self.image_size, style))],
            target=render(scene, self.image_size, style),
            task=self.name,
            meta={
                "caption": text,
                "scene": asdict(scene),
                "style": style,
                "reference_scene": asdict(reference),
                "conditions": {"text": caption_checks(scene), "style": ["style"]},
            },
        )

    def from_rows(self, index: int, rng: random.Random) -> Instruction:
        if self.pair_by is None:
            row = self.index[index]
            style, meta = self.rows.image(row, "style_image"), {}
        else:
            position, members = self.index[index]
            row, other = members[position], rng.randrange(len(members) - 1)
            reference = members[other + (other >= position)]  # any row of the group but the target
            style = self.rows.image(reference, "image")
            meta = {"pair_by": self.pair_by, "style_row_id": self.rows.row_id(reference)}
        text = self.rows.text(row, "caption")
        return Instruction(
            text=self.fill(rng, caption=text),
            context=[ContextItem(MARKER, STYLE_TEXT, fit_square(style, self.image_size))],
            target=fit_square(self.rows.image(row, "image"), self.image_size),
            task=self.name,
            meta={"caption": text, "row_id": self.rows.row_id(row), **meta},
        )
