"""The built-in evaluation suite (`python -m zoo evaluate --suite builtin`): every task of the built-in world as an
in-domain set, the paper's four zero-shot compositions as held-out sets, scored by `tasks.scoring.score`.

Laid out like the paper's Table 4 (arXiv 2401.01952 §4): in-domain rows per task, zero-shot rows per composition.
The in-domain sets draw their scenes from a world seeded apart from the training recipes' tasks (`EVAL_SEED_OFFSET`),
so no evaluation example is a training example; the zero-shot compositions never enter training at all
(`ZeroShot.held_out`). Control fidelity uses the same Canny annotator that made the edge conditions.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks.annotators import canny_edges
from tasks.control import Control
from tasks.editing import Editing
from tasks.scoring import score
from tasks.style_transfer import StyleTransfer
from tasks.styled_generation import StyledGeneration
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import TextToImage
from tasks.zeroshot import COMPOSITIONS, ZeroShot
from zoo.eval.suite import EvalSet, Suite
from zoo.grid import to_pil

# Recipes seed their tasks with small integers; evaluation worlds start far from them.
EVAL_SEED_OFFSET = 10_000


def edges(image: torch.Tensor) -> torch.Tensor:
    """The control tasks' Canny annotator on a generated image (3, H, W) in [-1, 1] → binary (H, W)."""
    return torch.from_numpy(np.asarray(canny_edges(to_pil(image))) > 0).float()


def builtin(n: int = 32, image_size: int = 32, seed: int = 0) -> Suite:
    """The suite with `n` examples per set at `image_size` pixels."""
    common = {"num_examples": n, "seed": EVAL_SEED_OFFSET + seed, "image_size": image_size}
    sets = [
        EvalSet("text_to_image", "in-domain", TextToImage(**common), family="text_to_image"),
        EvalSet("edge_to_image", "in-domain", Control(**common, condition="edge"), family="control", control="edge"),
        # Depth and mask fidelity need a depth/mask model on generated images; none ships offline, so these two rows
        # report SC/PQ (their scorer checks the condition against the world's ground truth).
        EvalSet("depth_to_image", "in-domain", Control(**common, condition="depth")),
        EvalSet("mask_to_image", "in-domain", Control(**common, condition="mask")),
        EvalSet("sketch_to_image", "in-domain", Control(**common, condition="sketch")),
        EvalSet("subject_driven", "in-domain", SubjectDriven(**common), family="subject"),
        EvalSet("styled_generation", "in-domain", StyledGeneration(**common)),
        EvalSet("style_transfer", "in-domain", StyleTransfer(**common)),
        EvalSet("editing", "in-domain", Editing(**common), family="editing"),
    ]
    families = {"style_subject": "subject", "multi_subject": "subject", "control_subject": "subject", "control_style": None}
    sets += [
        EvalSet(composition.replace("_", "+"), "zero-shot", ZeroShot(composition, **common), family=families[composition])
        for composition in COMPOSITIONS
    ]
    return Suite(name="builtin", sets=sets, score=score, annotators={"edge": edges})
