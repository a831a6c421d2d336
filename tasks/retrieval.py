"""Retrieval clusters for stage 1: one (image, text) target and three neighbouring (image, text) pairs as context.

Owns the `Retrieval` task plugin (paper §3.2, following Re-Imagen): "one (image, text) pair is sampled as the input
and target … and three other (image, text) pairs are sampled as the multi-modal context", from clusters of
"relevant but not duplicated" images. Templates: tasks/templates/retrieval.txt, with the placeholder {caption} (the
target's caption) and the literal markers [ref#1], [ref#2], [ref#3]; each context item's text is the neighbour's
own caption.

- World: the target is scene i; its neighbours are scenes of the same object family (the first object's shape and
  colour kept, everything else redrawn), never equal to the target or to each other, and of the target's content
  split (a stage-1 run never sees an evaluation scene, even as a neighbour).
- Dataset: columns `image`, `caption`, and either `cluster` (rows sharing a cluster id are neighbours; clusters of
  fewer than 4 rows are skipped, as the paper discards small clusters) or `neighbours` (a list of row positions in
  the split; rows with fewer than 3 valid neighbours are skipped).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from tasks.scoring import caption_checks
from tasks.world import (
    BACKGROUNDS,
    COLOURS,
    PATTERNS,
    POSITION_PAIRS,
    POSITIONS,
    SHAPES,
    SIZES,
    DrawsFromWorld,
    Scene,
    SceneObject,
    caption,
    content_split,
    render,
)
from zoo.instruction import ContextItem, Instruction
from zoo.sources import fit_square
from zoo.task import TemplatedTask

NEIGHBOURS = 3
MARKERS = tuple(f"[ref#{k}]" for k in range(1, NEIGHBOURS + 1))
STYLE = "flat"


def neighbour_scene(scene: Scene, rng: random.Random) -> Scene:
    """A scene of the same family: the first object keeps its shape and colour; the rest is drawn anew."""
    family = scene.objects[0]
    positions = list(rng.choice(POSITION_PAIRS)) if rng.random() < 0.5 else [rng.choice(list(POSITIONS))]
    rng.shuffle(positions)
    objects = [SceneObject(family.shape, family.colour, rng.choice(PATTERNS), positions[0], rng.choice(list(SIZES)))]
    if len(positions) > 1:
        colour = rng.choice([c for c in COLOURS if c != family.colour])  # distinct colours, as in every world scene
        shape, pattern, extent = rng.choice(SHAPES), rng.choice(PATTERNS), rng.choice(list(SIZES))
        objects.append(SceneObject(shape, colour, pattern, positions[1], extent))
    return Scene(rng.choice(list(BACKGROUNDS)), tuple(objects))


class Retrieval(DrawsFromWorld, TemplatedTask):
    name = "retrieval"
    default_templates = Path(__file__).parent / "templates" / "retrieval.txt"
    placeholders = frozenset({"caption"})
    markers = MARKERS
    columns = ("image", "caption")
    optional_columns = ("cluster", "neighbours")

    def index_rows(self) -> list[tuple[int, list[int]]]:
        """(target row, its candidate neighbours) for every row with at least 3 of them."""
        if self.rows.has("neighbours"):
            count = len(self.rows)
            lists = self.rows.column("neighbours")
            candidates = [
                [n for n in (ns or []) if isinstance(n, int) and 0 <= n < count and n != row]
                for row, ns in enumerate(lists)
            ]
            return [(row, ns) for row, ns in enumerate(candidates) if len(ns) >= NEIGHBOURS]
        if not self.rows.has("cluster"):
            raise ValueError(
                f"task {self.name!r}: source {self.source.path!r} needs a 'cluster' column (a cluster id per row) or a "
                "'neighbours' column (row positions of each row's neighbours); map one with source.columns"
            )
        clusters: dict[object, list[int]] = defaultdict(list)
        for row, cluster in enumerate(self.rows.column("cluster")):
            if cluster is not None:
                clusters[cluster].append(row)
        return [
            (row, [r for r in members if r != row])
            for members in clusters.values()
            if len(members) > NEIGHBOURS
            for row in members
        ]

    def from_world(self, index: int, rng: random.Random) -> Instruction:
        scene = self.world.scene(index)
        neighbours: list[Scene] = []
        while len(neighbours) < NEIGHBOURS:  # relevant but not duplicated
            candidate = neighbour_scene(scene, rng)
            if candidate != scene and candidate not in neighbours and content_split(candidate) == self.split:
                neighbours.append(candidate)
        text = caption(scene)
        return Instruction(
            text=self.fill(rng, caption=text),
            context=[
                ContextItem(marker, caption(n), render(n, self.image_size, STYLE))
                for marker, n in zip(MARKERS, neighbours)
            ],
            target=render(scene, self.image_size, STYLE),
            task=self.name,
            meta={
                "caption": text,
                "scene": asdict(scene),
                "style": STYLE,
                "neighbour_scenes": [asdict(n) for n in neighbours],
                "conditions": {"text": caption_checks(scene)},
            },
        )

    def from_rows(self, index: int, rng: random.Random) -> Instruction:
        row, candidates = self.index[index]
        neighbours = rng.sample(candidates, NEIGHBOURS)
        text, size = self.rows.text(row, "caption"), self.image_size
        return Instruction(
            text=self.fill(rng, caption=text),
            context=[
                ContextItem(marker, self.rows.text(n, "caption"), fit_square(self.rows.image(n, "image"), size))
                for marker, n in zip(MARKERS, neighbours)
            ],
            target=fit_square(self.rows.image(row, "image"), self.image_size),
            task=self.name,
            meta={
                "caption": text,
                "row_id": self.rows.row_id(row),
                "neighbour_row_ids": [self.rows.row_id(n) for n in neighbours],
            },
        )
