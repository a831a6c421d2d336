"""Subject-driven generation: draw a named subject, known only from context images, at a new placement.

Owns the `SubjectDriven` task plugin. Example i: a subject from `tasks.world.SUBJECTS`, one or two context images
of it at other placements (all under the one marker [ref#1], as the paper allows several images per reference),
and the target: the subject placed as the payload says. The payload names the subject's size, position and
background, never its colour, shape or pattern. Templates: tasks/templates/subject_driven.txt, with the
placeholders {subject} (e.g. "a large [ref#1] toy") and {placement} (e.g. "on the left, on a pink background").
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tasks.world import MIN_SIZE, PLACEMENTS, POSITION_PHRASES, SUBJECTS, caption, render, subject, subject_scene
from zoo.instruction import ContextItem, Instruction
from zoo.task import Task, load_templates

DEFAULT_TEMPLATES = Path(__file__).parent / "templates" / "subject_driven.txt"
MARKER = "[ref#1]"
MAX_REFERENCES = 2
STYLE = "flat"


class SubjectDriven(Task):
    """Args beyond the common ones: `subjects`, the subject names to draw from (None: all of
    `tasks.world.SUBJECTS`), so some can be held out of training and evaluated zero-shot."""

    name = "subject_driven"

    def __init__(
        self,
        num_examples: int = 2000,
        seed: int = 0,
        image_size: int = 32,
        templates: str | None = None,
        subjects: list[str] | None = None,
    ) -> None:
        if num_examples < 1:
            raise ValueError(f"num_examples must be at least 1, got {num_examples}")
        if image_size < MIN_SIZE:
            raise ValueError(f"image_size must be at least {MIN_SIZE}, got {image_size}")
        self.subjects = list(SUBJECTS if subjects is None else subjects)
        if not self.subjects:
            raise ValueError("subjects must name at least one subject, got an empty list")
        unknown = [name for name in self.subjects if name not in SUBJECTS]
        if unknown:
            raise ValueError(f"subjects: unknown subject(s) {unknown}; known: {', '.join(SUBJECTS)}")
        self.num_examples = num_examples
        self.seed = seed
        self.image_size = image_size
        self.templates = load_templates(templates or DEFAULT_TEMPLATES, required={"subject", "placement"})

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Instruction:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} is out of range for {self.name} with {self.num_examples} examples")
        rng = self.rng(self.seed, index)
        name = rng.choice(self.subjects)
        category = subject(name).category
        # Distinct placements, so no context image is a copy of the target.
        (position, size, background), *others = rng.sample(PLACEMENTS, 1 + rng.randint(1, MAX_REFERENCES))
        scene = subject_scene(name, position, size, background)
        references = [subject_scene(name, *placement) for placement in others]
        text = rng.choice(self.templates).format(
            subject=f"a {size} {MARKER} {category}",
            placement=f"{POSITION_PHRASES[position]}, on a {background} background",
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
                "reference_scenes": [asdict(reference) for reference in references],
            },
        )
