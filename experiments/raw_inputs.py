"""The multi-task baseline's inputs (paper Table 4): the same examples with the instruction wording taken away.

`RawInputs` wraps any templated task. The example, its images and its ground truth are unchanged; only the text
changes: the payload becomes the *content* the template was filled with (the caption, the edit, the subject names
with their markers, in template order) followed by every context marker, and each context item's text becomes its
bare marker. What is lost is exactly what the instruction adds: which task this is, what each reference is for
("depth map", "style image", "content image", "mask") and how to use it. Templates without content values (style
transfer) leave just the markers.

`builtin_raw` is the built-in evaluation suite with every set wrapped, so the baseline is evaluated on the inputs it
was trained on: `python -m zoo evaluate --suite experiments.raw_inputs:builtin_raw`.
"""

from __future__ import annotations

from dataclasses import replace

from tasks.suites import builtin
from zoo.eval.suite import Suite
from zoo.instruction import ContextItem, Instruction
from zoo.task import Task

# Placeholder values that describe the image to make; the others ("condition": "depth map", ...) are instruction.
CONTENT = ("subject", "first", "second", "caption", "change")


def raw_text(values: dict[str, str], markers: list[str]) -> str:
    content = ", ".join(values[key] for key in CONTENT if values.get(key))
    missing = [m for m in dict.fromkeys(markers) if m not in content]
    return " ".join([content, *missing]).strip()


class RawInputs(Task):
    """`task`'s examples with raw inputs instead of instructions (see the module docstring)."""

    def __init__(self, task: Task) -> None:
        if not hasattr(task, "fill"):
            raise TypeError(f"RawInputs needs a templated task (zoo.task.TemplatedTask), got {type(task).__name__}")
        self.task = task
        self.name = task.name
        self.held_out = getattr(task, "held_out", False)

    def __len__(self) -> int:
        return len(self.task)

    def __getitem__(self, index: int) -> Instruction:
        values: dict[str, str] = {}
        fill = self.task.fill

        def recording_fill(rng, **kwargs: str) -> str:  # the template's content values, as the task passes them
            values.update(kwargs)
            return fill(rng, **kwargs)

        self.task.fill = recording_fill
        try:
            instruction = self.task[index]
        finally:
            del self.task.fill
        markers = [item.marker for item in instruction.context]
        # stored images are in [-1, 1]; the Instruction constructor takes floats in [0, 1]
        return replace(
            instruction,
            text=raw_text(values, markers),
            context=[ContextItem(item.marker, item.marker, (item.image + 1) / 2) for item in instruction.context],
            target=None if instruction.target is None else (instruction.target + 1) / 2,
        )


def builtin_raw(n: int = 32, image_size: int = 32, seed: int = 0) -> Suite:
    """The built-in suite with raw inputs (same examples, targets and scorer)."""
    return replace(builtin(n=n, image_size=image_size, seed=seed, wrap=RawInputs), name="builtin-raw")
