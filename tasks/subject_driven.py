"""Subject-driven generation: draw a subject, known only from context images, as a caption says.

Owns the `SubjectDriven` task plugin. Templates: tasks/templates/subject_driven.txt, with the placeholders
{subject} (the marker and a short name, e.g. "[ref#1] toy") and {caption}; every context image of the subject is
an item "[ref#1] <name>" (the paper allows several images per reference, Fig 13).

- World: a named subject of `tasks.world.SUBJECTS` — toys (objects) or persons (faces, as the paper's CelebA rows)
  — with 1-2 context images at other placements; the target is the subject where the caption puts it. The payload
  names size, position and background, never the subject's colour, shape or pattern. The target's placement is
  one of the subject's placements in the task's content split; the references are other placements (training
  references stay in the train split too, so no evaluation target is ever shown, even as a reference).
- Dataset: rows grouped by a `group` column (one subject per group; objects and faces alike, as in the paper: "group
  the faces of the same person ... use one sampled (image, text) example as the input text and target image, and
  using the rest as multi-modal context"). Each row of a group with ≥ 2 rows is a target; up to `max_references`
  other rows of its group are the context, one per distinct photo: rows naming the same image file (a photo with
  several captions) are never each other's reference. Columns: `group`, `image`, `caption`, optional `subject` (its
  short name, e.g. "dog"; default "subject").
- DreamBench: `source: {path: dreambooth/dataset, layout: dreambench}` reads google/dreambooth's subject folders
  and prompts_and_classes.txt as such rows (`zoo.dreambench`), the subject named by its class ("[ref#1] stuffed
  animal"): split "train" captions each photo "a photo of a <class>"; split "prompts" pairs each subject with the
  benchmark's 25 prompts ("a stuffed animal in the jungle"), whose targets are photos of the subject but not of the
  prompt, so they are for evaluation.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from tasks.scoring import object_checks
from tasks.world import (
    POSITION_PHRASES,
    SUBJECT_KINDS,
    SUBJECTS,
    Split,
    caption,
    check_split,
    render,
    subject,
    subject_placements,
    subject_scene,
)
from zoo.instruction import ContextItem, Instruction
from zoo.sources import DatasetSource, fit_square
from zoo.task import TemplatedTask

MARKER = "[ref#1]"
WORLD_REFERENCES = 2
STYLE = "flat"


def check_subjects(subjects: list[str] | None, kind: str = "any", field: str = "subjects") -> list[str]:
    """The subject names to draw from (None: every subject of `kind`), checked against the world's."""
    if kind not in ("any", "object", "face"):
        raise ValueError(f"kind must be 'any', 'object' or 'face', got {kind!r}")
    if subjects is None:
        return [n for n, s in SUBJECTS.items() if kind == "any" or SUBJECT_KINDS[s.category] == kind]
    if not subjects:
        raise ValueError(f"{field} must name at least one subject, got an empty list")
    unknown = [name for name in subjects if name not in SUBJECTS]
    if unknown:
        raise ValueError(f"{field}: unknown subject(s) {unknown}; known: {', '.join(SUBJECTS)}")
    return list(subjects)


def placement_caption(category: str, position: str, size: str, background: str) -> str:
    """E.g. "a large toy on the left, on a pink background": where the subject goes, never what it looks like."""
    return f"a {size} {category} {POSITION_PHRASES[position]}, on a {background} background"


def reference_placements(name: str, target: tuple[str, str, str], rng: random.Random) -> list[tuple[str, str, str]]:
    """1-2 placements of subject `name` for its reference images: train-split ones (never an evaluation scene) other
    than the target's own, so no context image is a copy of the target."""
    choices = [p for p in subject_placements(name, "train") if p != target]
    return rng.sample(choices, rng.randint(1, WORLD_REFERENCES))


class SubjectDriven(TemplatedTask):
    """Args beyond `zoo.task.TemplatedTask`'s:
    subjects: world subject names to draw from (None: all of `kind`), so some can be held out.
    kind: world subjects of one kind: "object" (toys), "face" (persons) or "any".
    max_references: dataset: at most this many context images per example.
    split: "train" or "eval": which side of the world's content split (`tasks.world.content_split`) the
        built-in examples come from; evaluation sets use "eval", so their scenes were never trained on.
    """

    name = "subject_driven"
    default_templates = Path(__file__).parent / "templates" / "subject_driven.txt"
    placeholders = frozenset({"subject", "caption"})  # {subject} carries the marker
    columns = ("group", "image", "caption")
    optional_columns = ("subject",)

    def __init__(
        self,
        num_examples: int | None = None,
        seed: int = 0,
        image_size: int = 32,
        templates: str | None = None,
        source: DatasetSource | None = None,
        subjects: list[str] | None = None,
        kind: Literal["any", "object", "face"] = "any",
        max_references: int = 3,
        split: Split = "train",
    ) -> None:
        self.subjects = check_subjects(subjects, kind)
        if max_references < 1:
            raise ValueError(f"max_references must be at least 1, got {max_references}")
        self.max_references, self.split = max_references, check_split(split)
        super().__init__(num_examples, seed, image_size, templates, source)

    def index_rows(self) -> list[tuple[int, list[int]]]:
        """(target row, one row per other photo of its group) for every row whose group shows another photo."""
        groups: dict[object, list[int]] = defaultdict(list)
        for row, group in enumerate(self.rows.column("group")):
            if group is not None:
                groups[group].append(row)
        paths = self.rows.file_paths("image")
        index = []
        for members in groups.values():
            photos: dict[object, int] = {}  # photo → its first row; rows without a file name are their own photo
            for row in members:
                photos.setdefault(row if paths is None or paths[row] is None else paths[row], row)
            for row in members:
                own = row if paths is None or paths[row] is None else paths[row]
                references = [first for photo, first in photos.items() if photo != own]
                if references:
                    index.append((row, references))
        return sorted(index)  # row order, so num_examples keeps the first rows rather than the first groups

    def from_world(self, index: int, rng: random.Random) -> Instruction:
        name = rng.choice(self.subjects)
        category = subject(name).category
        position, size, background = rng.choice(subject_placements(name, self.split))
        others = reference_placements(name, (position, size, background), rng)
        scene = subject_scene(name, position, size, background)
        references = [subject_scene(name, *placement) for placement in others]
        text = self.fill(
            rng, subject=f"{MARKER} {category}", caption=placement_caption(category, position, size, background)
        )
        return Instruction(
            text=text,
            context=[
                ContextItem(MARKER, f"{MARKER} {category}", render(reference, self.image_size, STYLE))
                for reference in references
            ],
            target=render(scene, self.image_size, STYLE),
            task=self.name,
            meta={
                "subject": name,
                "category": category,
                "caption": caption(scene),
                "scene": asdict(scene),
                "style": STYLE,
                "reference_scenes": [asdict(reference) for reference in references],
                "conditions": {
                    "text": [*object_checks(scene, "position", "size"), "background"],
                    "subject": object_checks(scene, "shape", "colour", "pattern"),
                },
            },
        )

    def from_rows(self, index: int, rng: random.Random) -> Instruction:
        row, group = self.index[index]
        references = rng.sample(group, min(self.max_references, len(group)))
        name = self.rows.text(row, "subject") if self.rows.has("subject") else "subject"
        text = self.rows.text(row, "caption")
        return Instruction(
            text=self.fill(rng, subject=f"{MARKER} {name}", caption=text),
            context=[
                ContextItem(MARKER, f"{MARKER} {name}", fit_square(self.rows.image(r, "image"), self.image_size))
                for r in references
            ],
            target=fit_square(self.rows.image(row, "image"), self.image_size),
            task=self.name,
            meta={
                "caption": text,
                "row_id": self.rows.row_id(row),
                "reference_row_ids": [self.rows.row_id(r) for r in references],
            },
        )
