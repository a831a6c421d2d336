"""Evaluation suites for the tests.

`suite`: a small suite from the built-in task plugins and their scorer (`tasks.scoring.score`), in the shape
`tasks.suites:builtin` (what `--suite builtin` loads) takes: in-domain sets with their metric families, a held-out
zero-shot composition, the task side's scorer and its edge annotator, so control fidelity uses the detector that made
the condition.

`fake_suite`: a world small enough to reason about exactly, for the harness itself. A target is a square on the left or
right (the payload text says which) on a background whose colour only the reference image shows. `fake_score` returns
`Rating`s: a "text" condition (the square's side) and, where there is a reference, a "subject" condition (the
background colour), each backed by one attribute check. `FakeModel` generates without any network: "good" draws the
target when it is given its context, "blind" never reads the context.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from tasks.annotators import canny_edges
from tasks.control import Control
from tasks.scoring import score
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import TextToImage
from tasks.zeroshot import ZeroShot
from zoo.eval.suite import EvalSet, Rating, Suite
from zoo.grid import to_pil
from zoo.instruction import ContextItem, Instruction, InstructionBatch


def edges(image: torch.Tensor) -> torch.Tensor:
    """The control tasks' Canny annotator on a generated image (3, H, W) in [-1, 1] → binary (H, W)."""
    return torch.from_numpy(np.asarray(canny_edges(to_pil(image))) > 0).float()


def suite(n: int, image_size: int, seed: int = 0) -> Suite:
    common = {"num_examples": n, "seed": seed, "image_size": image_size}
    return Suite(
        name="test",
        sets=[
            EvalSet("text_to_image", "in-domain", TextToImage(**common), family="text_to_image"),
            EvalSet("subject_driven", "in-domain", SubjectDriven(**common), family="subject"),
            EvalSet(
                "edge_to_image", "in-domain", Control(**common, condition="edge"), family="control", control="edge"
            ),
            EvalSet("style+subject", "zero-shot", ZeroShot("style_subject", **common), family="subject"),
        ],
        score=score,
        annotators={"edge": edges},
    )


# ------------------------------------------------------------------------------------------------ the fake world
GREY = (0.0, 0.0, 0.0)  # the background a model uses when it does not know the colour ([-1, 1] scale)


def draw(side: str, colour: tuple[float, float, float], size: int) -> torch.Tensor:
    """A white square in the `side` half of a `colour` background, (3, size, size) in [-1, 1]."""
    image = torch.tensor(colour).view(3, 1, 1).expand(3, size, size).clone()
    left = 1 if side == "left" else size // 2 + 1
    image[:, size // 4 : 3 * size // 4, left : left + size // 2 - 2] = 1.0
    return image


def colour_of(k: int) -> tuple[float, float, float]:
    """A distinct dark colour per example, so "another target" has another background."""
    return (-0.8 + 0.2 * (k % 8), -0.6, -0.8 + 0.05 * (k % 13))


def fake_score(meta: dict, image: torch.Tensor) -> Rating:
    """ "text": the brighter half is the square's side; "subject": a corner (background) within 0.1 of the colour."""
    half = image.shape[-1] // 2
    left_brighter = image[..., :half].mean() > image[..., half:].mean()
    right_brighter = image[..., half:].mean() > image[..., :half].mean()
    side = 1.0 if (left_brighter if meta["side"] == "left" else right_brighter) else 0.0
    attributes = {"position": [side]}
    conditions = {"text": side}
    if "colour" in meta:
        corner = image[:, 0, 0]
        colour = 1.0 if (corner - torch.tensor(meta["colour"])).abs().max() < 0.1 else 0.0
        conditions["subject"] = colour
        attributes["colour"] = [colour]
    return Rating(conditions=conditions, attributes=attributes)


def fake_instructions(n: int, size: int, with_reference: bool, offset: int = 0) -> list[Instruction]:
    examples = []
    for k in range(offset, offset + n):
        side = "left" if k % 2 == 0 else "right"
        if with_reference:
            colour = colour_of(k)
            plain = torch.tensor(colour).view(3, 1, 1).expand(3, size, size)
            reference = ContextItem("[ref#1]", "[ref#1] background", (plain + 1) / 2)
            examples.append(
                Instruction(
                    f"Draw a square on the {side} over the background of [ref#1]",
                    [reference],
                    target=(draw(side, colour, size) + 1) / 2,
                    meta={"side": side, "colour": colour},
                )
            )
        else:
            examples.append(
                Instruction(
                    f"Draw a square on the {side}", target=(draw(side, GREY, size) + 1) / 2, meta={"side": side}
                )
            )
    return examples


def background(instructions: list[Instruction]) -> torch.Tensor:
    """The fake world's own chance baseline: the true background alone (what the built-in world provides)."""
    size = instructions[0].target.shape[-1]
    colours = [torch.tensor(i.meta.get("colour", GREY)).view(3, 1, 1) for i in instructions]
    return torch.stack([colour.expand(3, size, size) for colour in colours])


def fake_suite(n: int, image_size: int, seed: int = 0) -> Suite:
    """A text-only set, a set with a reference (in-domain), one zero-shot and one editing set."""
    return Suite(
        name="fake",
        sets=[
            EvalSet("square", "in-domain", fake_instructions(n, image_size, with_reference=False)),
            EvalSet("square+colour", "in-domain", fake_instructions(n, image_size, with_reference=True)),
            EvalSet("colour zero-shot", "zero-shot", fake_instructions(n, image_size, with_reference=True, offset=100)),
            EvalSet("recolour", "editing", fake_instructions(n, image_size, with_reference=True, offset=200)),
        ],
        score=fake_score,
        baselines={"background": background},
    )


class FakeModel:
    """Stands in for InstructImagen in `evaluate`: `generate` draws from the batch and records its arguments."""

    def __init__(self, kind: str, image_size: int) -> None:
        from diffusers import DDPMScheduler

        self.kind, self.calls = kind, []
        self.hparams = SimpleNamespace(image_size=image_size, sample_steps=7, guidance_scale=3.0)
        self.scheduler = DDPMScheduler()

    def generate(self, batch: InstructionBatch, **kwargs) -> torch.Tensor:
        self.calls.append(kwargs)
        size = self.hparams.image_size
        images = []
        for k, text in enumerate(batch.texts):
            side = "left" if "on the left" in text else "right"
            reads_context = self.kind == "good" and bool(batch.context_mask[k].any())
            colour = tuple(batch.context_images[k, 0, :, 0, 0].tolist()) if reads_context else GREY
            images.append(draw(side, colour, size))
        return torch.stack(images)
