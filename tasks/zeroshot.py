"""The paper's four zero-shot compositions, as held-out evaluation sets from the built-in world.

Owns the `ZeroShot` task plugin (arXiv 2401.01952 §4.1: "Sty+Sub, MultiSub, Ctrl+Sub, Ctrl+Sty"). Each
`composition` has its own templates (tasks/templates/zeroshot_<composition>.txt) and ground truth for
`tasks.scoring`:

Each input of an instruction carries what only it can give (the scorer's conditions are these inputs):

- style_subject: a subject ([ref#1], 1-2 images) drawn in the style of [ref#2]; the text places it (position, size,
  background), the references give its look and the style.
- multi_subject: two subjects ([ref#1], [ref#2], one image each) in one scene, in opposite halves, placed by the text.
- control_subject: a subject ([ref#1]) placed and sized as a depth map, mask or edge map ([ref#2]) shows; the text
  names only the background, the map (drawn from silhouettes, so it shows no fill pattern) only where and how big.
- control_style: a scene following a condition map ([ref#1]) in the style of [ref#2]; the text names colours,
  patterns and background as in the control tasks, never geometry.

Never in training, by construction: every training task gives an instruction one kind of condition (a style, a
subject, a control map, an edit, a retrieval cluster), while every zero-shot instruction combines two; and every
target is an evaluation scene of the world's content split (`tasks.world.content_split`), which no training task
draws. Subject references are train-split placements (the subject is known, its placement new). `held_out = True`
marks the task so a data pipeline refuses it as a training task; use it under `validate`/`test` or for scoring.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar, Literal

from tasks.control import CONDITION_TEXT, control_caption, control_map
from tasks.scoring import object_checks
from tasks.styled_generation import check_styles
from tasks.subject_driven import check_subjects, placement_caption, reference_placements
from tasks.world import (
    BACKGROUNDS,
    POSITION_PAIRS,
    POSITION_PHRASES,
    SIZES,
    STYLES,
    Scene,
    SceneObject,
    World,
    caption,
    content_split,
    render,
    subject,
    subject_placements,
    subject_scene,
)
from zoo.instruction import ContextItem, Instruction
from zoo.task import TemplatedTask

Composition = Literal["style_subject", "multi_subject", "control_subject", "control_style"]
COMPOSITIONS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {  # placeholders, literal markers
    "style_subject": (frozenset({"subject", "caption"}), ("[ref#2]",)),
    "multi_subject": (frozenset({"first", "second", "caption"}), ()),
    "control_subject": (frozenset({"subject", "condition", "caption"}), ("[ref#2]",)),
    "control_style": (frozenset({"condition", "caption"}), ("[ref#1]", "[ref#2]")),
}
CONTROLS = ("depth", "mask", "edge")
CONTENT_STYLE = "flat"


class ZeroShot(TemplatedTask):
    """Args beyond `zoo.task.TemplatedTask`'s (no `source`: the sets come from the world):
    composition: which of the paper's four compositions.
    subjects: subject names to draw from (None: all).
    styles: styles to draw from (None: every style but "flat", the subjects' own look).
    """

    held_out: ClassVar[bool] = True
    split: ClassVar[str] = "eval"
    world_examples = 100  # the paper's sets hold 99-132 examples each

    def __init__(
        self,
        composition: Composition = "style_subject",
        num_examples: int | None = None,
        seed: int = 0,
        image_size: int = 32,
        templates: str | None = None,
        subjects: list[str] | None = None,
        styles: list[str] | None = None,
    ) -> None:
        if composition not in COMPOSITIONS:
            raise ValueError(f"composition must be one of {list(COMPOSITIONS)}, got {composition!r}")
        self.composition, self.name = composition, f"zeroshot_{composition}"
        self.placeholders, self.markers = COMPOSITIONS[composition]
        self.default_templates = Path(__file__).parent / "templates" / f"zeroshot_{composition}.txt"
        self.subjects = check_subjects(subjects)
        if composition == "multi_subject" and len(self.subjects) < 2:
            raise ValueError(f"subjects: multi_subject needs at least two subjects, got {self.subjects}")
        self.styles = check_styles(styles, allowed=tuple(s for s in STYLES if s != CONTENT_STYLE))
        super().__init__(num_examples, seed, image_size, templates)
        self.world = World(f"zeroshot:{seed}", self.split)

    def from_world(self, index: int, rng: random.Random) -> Instruction:
        return getattr(self, f"_{self.composition}")(index, rng)

    def _style_image(self, style: str, rng: random.Random) -> ContextItem:
        reference = self.world.scene(rng.randrange(2**31), (style,))
        return ContextItem("[ref#2]", "a [ref#2] style image", render(reference, self.image_size, style))

    def _subject_items(self, marker: str, name: str, placements: list[tuple[str, str, str]]) -> list[ContextItem]:
        category = subject(name).category
        return [
            ContextItem(marker, f"{marker} {category}", render(subject_scene(name, *p), self.image_size, CONTENT_STYLE))
            for p in placements
        ]

    def _style_subject(self, index: int, rng: random.Random) -> Instruction:
        # (subject, style) pairs with an unseen placement in that style; every subject has some flat ones
        pairs = [(n, s) for n in self.subjects for s in self.styles if subject_placements(n, self.split, s)]
        name, style = rng.choice(pairs)
        placement = rng.choice(subject_placements(name, self.split, style))
        scene = subject_scene(name, *placement)
        category = subject(name).category
        text = self.fill(rng, subject=f"[ref#1] {category}", caption=placement_caption(category, *placement))
        references = self._subject_items("[ref#1]", name, reference_placements(name, placement, rng))
        return self._instruction(
            text,
            [*references, self._style_image(style, rng)],
            scene,
            style,
            {
                "text": [*object_checks(scene, "position", "size"), "background"],
                "subject": object_checks(scene, "shape", "colour", "pattern"),
                "style": ["style"],
            },
            subjects=[name],
        )

    def _multi_subject(self, index: int, rng: random.Random) -> Instruction:
        while True:  # a two-subject scene of the split
            names = rng.sample(self.subjects, 2)
            positions = list(rng.choice(POSITION_PAIRS))
            rng.shuffle(positions)
            sizes = [rng.choice(list(SIZES)) for _ in names]
            background = rng.choice(list(BACKGROUNDS))
            objects = tuple(
                SceneObject(subject(n).shape, subject(n).colour, subject(n).pattern, p, s)
                for n, p, s in zip(names, positions, sizes)
            )
            scene = Scene(background, objects)
            if content_split(scene) == self.split:
                break
        markers = ("[ref#1]", "[ref#2]")
        categories = [subject(n).category for n in names]
        placed = " and ".join(
            f"the {s} {m} {c} {POSITION_PHRASES[p]}" for m, c, p, s in zip(markers, categories, positions, sizes)
        )
        text = self.fill(
            rng,
            first=f"[ref#1] {categories[0]}",
            second=f"[ref#2] {categories[1]}",
            caption=f"{placed}, on a {background} background",
        )
        context = []
        for marker, name, position in zip(markers, names, positions):
            elsewhere = [p for p in subject_placements(name, "train") if p[0] != position]
            context += self._subject_items(marker, name, [rng.choice(elsewhere)])
        return self._instruction(
            text,
            context,
            scene,
            CONTENT_STYLE,
            {
                "text": [*object_checks(scene, "position", "size"), "background"],
                "subject": object_checks(scene, "shape", "colour", "pattern"),
            },
            subjects=names,
        )

    def _control_subject(self, index: int, rng: random.Random) -> Instruction:
        name, condition = rng.choice(self.subjects), rng.choice(CONTROLS)
        placement = rng.choice(subject_placements(name, self.split))
        scene = subject_scene(name, *placement)
        category = subject(name).category
        # The text names the background only: where and how big come from the map, the look from the references.
        text = self.fill(
            rng,
            subject=f"[ref#1] {category}",
            condition=CONDITION_TEXT[condition],
            caption=f"a {category} on a {scene.background} background",
        )
        control = ContextItem(
            "[ref#2]",
            f"[ref#2] {CONDITION_TEXT[condition]}",
            control_map(condition, scene, self.image_size, rng, geometry_only=True),
        )
        references = self._subject_items("[ref#1]", name, reference_placements(name, placement, rng))
        return self._instruction(
            text,
            [*references, control],
            scene,
            CONTENT_STYLE,
            {
                "text": ["background"],
                "subject": object_checks(scene, "shape", "colour", "pattern"),
                "control": object_checks(scene, "position", "size"),
            },
            subjects=[name],
            condition=condition,
        )

    def _control_style(self, index: int, rng: random.Random) -> Instruction:
        style, condition = rng.choice(self.styles), rng.choice(CONTROLS)
        scene = self.world.scene(index, (style,))
        text = self.fill(rng, condition=CONDITION_TEXT[condition], caption=control_caption(scene))
        control = ContextItem(
            "[ref#1]", f"[ref#1] {CONDITION_TEXT[condition]}", control_map(condition, scene, self.image_size, rng)
        )
        return self._instruction(
            text,
            [control, self._style_image(style, rng)],
            scene,
            style,
            {
                "text": [*object_checks(scene, "colour", "pattern"), "background"],
                "control": object_checks(scene, "shape", "position", "size"),
                "style": ["style"],
            },
            condition=condition,
        )

    def _instruction(
        self,
        text: str,
        context: list[ContextItem],
        scene: Scene,
        style: str,
        conditions: dict[str, list[str]],
        **meta: object,
    ) -> Instruction:
        return Instruction(
            text=text,
            context=context,
            target=render(scene, self.image_size, style),
            task=self.name,
            meta={
                "composition": self.composition,
                "scene": asdict(scene),
                "style": style,
                "caption": caption(scene),
                "conditions": conditions,
                **meta,
            },
        )
