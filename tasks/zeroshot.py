"""The paper's four zero-shot compositions, as held-out evaluation sets from the built-in world.

Owns the `ZeroShot` task plugin (arXiv 2401.01952 §4.1: "Sty+Sub, MultiSub, Ctrl+Sub, Ctrl+Sty"). Each
`composition` has its own templates (tasks/templates/zeroshot_<composition>.txt) and ground truth for
`tasks.scoring`:

- style_subject: a subject ([ref#1], 1-2 images) drawn in the style of [ref#2]; the target is the subject, placed
  as the caption says, in that style.
- multi_subject: two subjects ([ref#1], [ref#2], one image each) in one scene, in opposite halves.
- control_subject: a subject ([ref#1]) placed and sized as a depth map, mask or edge map ([ref#2]) shows.
- control_style: a scene following a condition map ([ref#1]) in the style of [ref#2].

Never in training, by construction: every training task gives an instruction one kind of condition (a style, a
subject, a control map, an edit, a retrieval cluster), while every zero-shot instruction combines two, and its
scenes come from a world seeded apart from the training tasks' ("zeroshot:<seed>"). `held_out = True` marks the
task so a data pipeline can refuse it as a training task; use it under `validate`/`test` or for scoring only.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar, Literal

from tasks.control import CONDITION_TEXT, control_map
from tasks.scoring import caption_conditions, object_checks
from tasks.styled_generation import check_styles
from tasks.subject_driven import check_subjects, placement_caption
from tasks.world import (
    BACKGROUNDS,
    PLACEMENTS,
    POSITION_PAIRS,
    POSITION_PHRASES,
    SIZES,
    STYLES,
    Scene,
    SceneObject,
    World,
    caption,
    render,
    subject,
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
WORLD_REFERENCES = 2


class ZeroShot(TemplatedTask):
    """Args beyond `zoo.task.TemplatedTask`'s (no `source`: the sets come from the world):
        composition: which of the paper's four compositions.
        subjects: subject names to draw from (None: all).
        styles: styles to draw from (None: every style but "flat", the subjects' own look).
    """

    held_out: ClassVar[bool] = True
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
        self.world = World(f"zeroshot:{seed}")

    def from_world(self, index: int, rng: random.Random) -> Instruction:
        return getattr(self, f"_{self.composition}")(index, rng)

    def _style_image(self, style: str, rng: random.Random) -> ContextItem:
        reference = self.world.scene(rng.randrange(2**31))
        return ContextItem("[ref#2]", "a [ref#2] style image", render(reference, self.image_size, style))

    def _subject_items(self, marker: str, name: str, placements: list[tuple[str, str, str]]) -> list[ContextItem]:
        category = subject(name).category
        return [ContextItem(marker, f"{marker} {category}", render(subject_scene(name, *p), self.image_size,
                                                                   CONTENT_STYLE)) for p in placements]

    def _style_subject(self, index: int, rng: random.Random) -> Instruction:
        name, style = rng.choice(self.subjects), rng.choice(self.styles)
        (position, size, background), *others = rng.sample(PLACEMENTS, 1 + rng.randint(1, WORLD_REFERENCES))
        scene = subject_scene(name, position, size, background)
        category = subject(name).category
        text = self.fill(rng, subject=f"[ref#1] {category}",
                         caption=placement_caption(category, position, size, background))
        return self._instruction(
            text, [*self._subject_items("[ref#1]", name, others), self._style_image(style, rng)], scene, style,
            {"subject": object_checks(scene, "shape", "colour", "pattern"), "style": ["style"],
             "position": object_checks(scene, "position"), "size": object_checks(scene, "size"),
             "background": ["background"]},
            subjects=[name],
        )

    def _multi_subject(self, index: int, rng: random.Random) -> Instruction:
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
        markers = ("[ref#1]", "[ref#2]")
        categories = [subject(n).category for n in names]
        placed = " and ".join(f"the {s} {m} {c} {POSITION_PHRASES[p]}"
                              for m, c, p, s in zip(markers, categories, positions, sizes))
        text = self.fill(rng, first=f"[ref#1] {categories[0]}", second=f"[ref#2] {categories[1]}",
                         caption=f"{placed}, on a {background} background")
        context = []
        for marker, name, position in zip(markers, names, positions):
            elsewhere = [p for p in PLACEMENTS if p[0] != position]
            context += self._subject_items(marker, name, [rng.choice(elsewhere)])
        return self._instruction(
            text, context, scene, CONTENT_STYLE,
            {"subject": object_checks(scene, "shape", "colour", "pattern"),
             "position": object_checks(scene, "position"), "size": object_checks(scene, "size"),
             "background": ["background"]},
            subjects=names,
        )

    def _control_subject(self, index: int, rng: random.Random) -> Instruction:
        name, condition = rng.choice(self.subjects), rng.choice(CONTROLS)
        (position, size, background), *others = rng.sample(PLACEMENTS, 1 + rng.randint(1, WORLD_REFERENCES))
        scene = subject_scene(name, position, size, background)
        category = subject(name).category
        text = self.fill(rng, subject=f"[ref#1] {category}", condition=CONDITION_TEXT[condition],
                         caption=placement_caption(category, position, size, background))
        control = ContextItem("[ref#2]", f"[ref#2] {CONDITION_TEXT[condition]}",
                              control_map(condition, scene, self.image_size, rng))
        return self._instruction(
            text, [*self._subject_items("[ref#1]", name, others), control], scene, CONTENT_STYLE,
            {"subject": object_checks(scene, "shape", "colour", "pattern"),
             "control": object_checks(scene, "position", "size"), "background": ["background"]},
            subjects=[name], condition=condition,
        )

    def _control_style(self, index: int, rng: random.Random) -> Instruction:
        scene, style, condition = self.world.scene(index), rng.choice(self.styles), rng.choice(CONTROLS)
        text = self.fill(rng, condition=CONDITION_TEXT[condition], caption=caption(scene))
        control = ContextItem("[ref#1]", f"[ref#1] {CONDITION_TEXT[condition]}",
                              control_map(condition, scene, self.image_size, rng))
        conditions = caption_conditions(scene)
        return self._instruction(
            text, [control, self._style_image(style, rng)], scene, style,
            {"control": object_checks(scene, "shape", "position", "size"), "colour": conditions["colour"],
             "pattern": conditions["pattern"], "background": ["background"], "style": ["style"]},
            condition=condition,
        )

    def _instruction(self, text: str, context: list[ContextItem], scene: Scene, style: str,
                     conditions: dict[str, list[str]], **meta: object) -> Instruction:
        return Instruction(
            text=text,
            context=context,
            target=render(scene, self.image_size, style),
            task=self.name,
            meta={"composition": self.composition, "scene": asdict(scene), "style": style, "caption": caption(scene),
                  "conditions": conditions, **meta},
        )
