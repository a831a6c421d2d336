"""Chance baselines: images made without following the instruction, scored like a model to show chance level.

A scorer can be generous (a uniform image of the right colour passes a colour check; a copy of the style reference
passes a style check), so a model's SC means little until it is set beside what no understanding achieves. The
generic baselines know nothing of any world:

- "mean colour": a uniform image of each target's mean colour;
- "first reference": a copy of the example's first context image (resized to the target's size); only for sets whose
  every example has a context;
- "another target": the target of example (i + 1) mod n of the same set: a genuine image for another instruction.

A suite adds its own (`Suite.baselines`, e.g. the built-in world's true background alone). Each returns images
(N, 3, H, W) in [-1, 1], one per instruction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from zoo.eval.suite import Baseline, EvalSet
from zoo.instruction import Instruction


def mean_colour(instructions: Sequence[Instruction]) -> torch.Tensor:
    """A uniform image of each target's mean colour."""
    targets = torch.stack([i.target for i in instructions])
    return targets.mean(dim=(2, 3), keepdim=True).expand_as(targets).clone()


def first_reference(instructions: Sequence[Instruction]) -> torch.Tensor:
    """A copy of each example's first context image, at its target's size."""
    images = []
    for instruction in instructions:
        image, size = instruction.context[0].image, instruction.target.shape[-2:]
        if image.shape[-2:] != size:
            image = F.interpolate(image[None], size=tuple(size), mode="bilinear", antialias=True)[0].clamp(-1, 1)
        images.append(image)
    return torch.stack(images)


def another_target(instructions: Sequence[Instruction]) -> torch.Tensor:
    """Example i gets the target of example (i + 1) mod n."""
    targets = [i.target for i in instructions]
    return torch.stack(targets[1:] + targets[:1])


GENERIC = ("mean colour", "first reference", "another target")


def applicable(eval_set: EvalSet) -> dict[str, Baseline]:
    """The generic baselines that make sense for `eval_set` (all need targets; see the module docstring)."""
    instructions = list(eval_set.instructions)
    if any(i.target is None for i in instructions):
        return {}
    chosen: dict[str, Baseline] = {"mean colour": mean_colour}
    if all(i.context for i in instructions):
        chosen["first reference"] = first_reference
    if len(instructions) > 1:  # with one example, "another" target would be its own
        chosen["another target"] = another_target
    return chosen


def baseline_images(eval_set: EvalSet, suite_baselines: Mapping[str, Baseline]) -> dict[str, torch.Tensor]:
    """{baseline name: images (N, 3, H, W)} for one set: the applicable generic ones, then the suite's own."""
    instructions = list(eval_set.instructions)
    shape = tuple(instructions[0].target.shape) if instructions[0].target is not None else None
    images = {}
    for name, make in {**applicable(eval_set), **suite_baselines}.items():
        made = make(instructions)
        if not isinstance(made, torch.Tensor) or made.ndim != 4 or len(made) != len(instructions):
            got = tuple(made.shape) if isinstance(made, torch.Tensor) else type(made).__name__
            raise ValueError(
                f"baseline {name!r} on set {eval_set.name!r}: expected images ({len(instructions)}, 3, H, W), got {got}"
            )
        if shape is not None and tuple(made.shape[1:]) != shape:
            raise ValueError(
                f"baseline {name!r} on set {eval_set.name!r}: images are {tuple(made.shape[1:])}, targets {shape}"
            )
        images[name] = made.float().clamp(-1, 1)
    return images
