"""A small evaluation suite for the tests, built from the task plugins on main, with a hand-written scorer that
compares against a fresh render of the ground truth.

It stands in for the task side's built-in suite (`tasks.suites:builtin`): three in-domain sets and one "zero-shot"
set (a style a real suite would hold out of training).
"""

from __future__ import annotations

import torch

from tasks.styled_generation import StyledGeneration
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import TextToImage
from tasks.world import Scene, SceneObject, render
from zoo.eval.suite import EvalSet, Suite
from zoo.instruction import to_image_tensor


def render_score(meta: dict, image: torch.Tensor) -> dict[str, float]:
    """Compares the image with the ground-truth render of `meta`: mean |Δ| < 0.1 → 1, < 0.2 → 0.5, else 0.

    One condition per aspect a real scorer would check separately; here they share one pixel test, which is all
    these tests need (a copy of the target scores 1, noise scores 0).
    """
    scene = Scene(meta["scene"]["background"], tuple(SceneObject(**o) for o in meta["scene"]["objects"]))
    truth = to_image_tensor(render(scene, image.shape[-1], meta.get("style", "flat")))
    error = ((image.clamp(-1, 1) - truth).abs().mean() / 2).item()
    level = 1.0 if error < 0.1 else 0.5 if error < 0.2 else 0.0
    return {"layout": level, "style": level}


def suite(n: int, image_size: int, seed: int = 0) -> Suite:
    return Suite(
        name="test",
        sets=[
            EvalSet("text_to_image", "in-domain", TextToImage(n, seed, image_size), family="text_to_image"),
            EvalSet("subject_driven", "in-domain", SubjectDriven(n, seed, image_size), family="subject"),
            EvalSet("styled_generation", "in-domain", StyledGeneration(n, seed, image_size, styles=["flat", "sepia"])),
            EvalSet("neon_style", "zero-shot", StyledGeneration(n, seed, image_size, styles=["neon"]), family="subject"),
        ],
        score=render_score,
    )
