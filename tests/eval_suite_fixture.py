"""A small evaluation suite for the tests, from the built-in task plugins and their scorer (`tasks.scoring.score`).

It is the shape `tasks.suites:builtin` (what `--suite builtin` loads) takes: in-domain sets with their metric
families, a held-out zero-shot composition, the task side's scorer and its edge annotator, so control fidelity uses
the detector that made the condition.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks.annotators import canny_edges
from tasks.control import Control
from tasks.scoring import score
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import TextToImage
from tasks.zeroshot import ZeroShot
from zoo.eval.suite import EvalSet, Suite
from zoo.grid import to_pil


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
            EvalSet("edge_to_image", "in-domain", Control(**common, condition="edge"), family="control", control="edge"),
            EvalSet("style+subject", "zero-shot", ZeroShot("style_subject", **common), family="subject"),
        ],
        score=score,
        annotators={"edge": edges},
    )
