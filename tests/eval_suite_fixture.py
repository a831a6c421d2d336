"""A small evaluation suite for the tests, built from the task plugins on main, with a hand-written colour scorer.

It stands in for the task side's built-in suite (`tasks.suites:builtin`): two in-domain sets and one "zero-shot" set
(styles a real suite would hold out of training). Every set has context images: on main, a batch of context-free
instructions (text-to-image alone) fails inside ContextCrossAttention (a view of 0 context tokens), so the
text-to-image family is tested on hand-made tensors in test_eval_metrics.py instead.
"""

from __future__ import annotations

import torch

from tasks.styled_generation import StyledGeneration
from tasks.subject_driven import SubjectDriven
from tasks.world import BACKGROUNDS, COLOURS, POSITIONS
from zoo.eval.suite import EvalSet, Suite


def _nearest(rgb: torch.Tensor, palette: dict[str, tuple[int, int, int]]) -> str:
    return min(palette, key=lambda name: sum((float(c) - p) ** 2 for c, p in zip(rgb, palette[name])))


def colour_score(meta: dict, image: torch.Tensor) -> dict[str, float]:
    """Background colour from the corner pixel, each object's colour at its centre: 1 if right, else 0."""
    pixels = (image.clamp(-1, 1) + 1) * 127.5
    h, w = pixels.shape[-2:]
    scene = meta["scene"]
    conditions = {"background": float(_nearest(pixels[:, 0, 0], BACKGROUNDS) == scene["background"])}
    for k, obj in enumerate(scene["objects"]):
        fx, fy = POSITIONS[obj["position"]]
        centre = pixels[:, int(fy * (h - 1)), int(fx * (w - 1))]
        conditions[f"object {k} colour"] = float(_nearest(centre, COLOURS) == obj["colour"])
    return conditions


def suite(n: int, image_size: int, seed: int = 0) -> Suite:
    return Suite(
        name="test",
        sets=[
            EvalSet("subject_driven", "in-domain", SubjectDriven(n, seed, image_size), family="subject"),
            EvalSet("styled_generation", "in-domain", StyledGeneration(n, seed, image_size, styles=["flat", "sepia"])),
            EvalSet("neon_style", "zero-shot", StyledGeneration(n, seed, image_size, styles=["neon"]), family="subject"),
        ],
        score=colour_score,
    )
