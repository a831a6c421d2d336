"""The built-in evaluation suite (`python -m zoo evaluate --suite builtin`): every task of the built-in world as an
in-domain set, the paper's four zero-shot compositions as held-out sets, editing on its own, scored by
`tasks.scoring.score`.

Laid out like the paper's Table 4 (arXiv 2401.01952 §4): in-domain rows per task (faces apart from objects, as the
paper's CelebA rows), zero-shot rows per composition, and editing in a table of its own (only the editing fine-tune
trains it). Unseen by construction: every set is built with `split="eval"`, so its targets are evaluation scenes of
the world's content split (`tasks.world.content_split`), which no training task draws, whatever its seed. Each set
draws its own scenes: a target already taken by an earlier set (or earlier in the same set) is skipped, so no two
examples of the suite share a target. Control fidelity uses the same Canny annotator that made the edge conditions.

Chance baselines the report scores beside the models: the generic ones of `zoo.eval.baselines`, and here
"background", the true background alone in the target's style.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch

from tasks.annotators import canny_edges
from tasks.control import Control
from tasks.editing import Editing
from tasks.scoring import scene_from_dict, score
from tasks.style_transfer import StyleTransfer
from tasks.styled_generation import StyledGeneration
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import TextToImage
from tasks.world import render_background
from tasks.zeroshot import COMPOSITIONS, ZeroShot
from zoo.eval.suite import EvalSet, Suite
from zoo.grid import to_pil
from zoo.instruction import Instruction, to_image_tensor
from zoo.task import Task

# Evaluation worlds are seeded apart from the recipes' small integers (the content split, not the seed, is what keeps
# them unseen; distinct seeds just keep the sets from drawing the same scenes in the same order).
EVAL_SEED_OFFSET = 10_000
# A set gives up looking for unseen, not-yet-used targets after this many candidates per example asked for.
TRIES_PER_EXAMPLE = 20


def edges(image: torch.Tensor) -> torch.Tensor:
    """The control tasks' Canny annotator on a generated image (3, H, W) in [-1, 1] → binary (H, W)."""
    return torch.from_numpy(np.asarray(canny_edges(to_pil(image))) > 0).float()


def background(instructions: list[Instruction]) -> torch.Tensor:
    """Chance baseline: each example's true background alone, in its target's style (N, 3, H, W) in [-1, 1]."""
    images = []
    for instruction in instructions:
        size = instruction.target.shape[-1]
        scene = scene_from_dict(instruction.meta["scene"])
        picture = render_background(scene.background, size, instruction.meta["style"])
        images.append(to_image_tensor(picture))
    return torch.stack(images)


def target_key(instruction: Instruction) -> str:
    """The pixels of an example's target, hashed: equal keys mean equal pictures."""
    return hashlib.sha256(instruction.target.numpy().tobytes()).hexdigest()


def pick_unused(task: Task, n: int, used: set[str]) -> list[Instruction]:
    """The first `n` examples of `task` whose targets are not in `used` (which this extends)."""
    picked = []
    for index in range(min(len(task), TRIES_PER_EXAMPLE * n)):
        instruction = task[index]
        key = target_key(instruction)
        if key not in used:
            used.add(key)
            picked.append(instruction)
            if len(picked) == n:
                break
    return picked


def builtin(n: int = 32, image_size: int = 32, seed: int = 0, wrap: Callable[[Task], Task] | None = None) -> Suite:
    """The suite with `n` examples per set at `image_size` pixels (`wrap` rewrites every set's task, e.g. raw inputs).

    A set holds fewer than `n` examples only when the world has no more unseen targets of its kind (faces: about 48).
    """
    return _suite("builtin", _specs(n, image_size, seed), n, wrap)


def text_to_image(n: int = 32, image_size: int = 32, seed: int = 0) -> Suite:
    """The built-in suite's text-to-image row alone, the same examples (`--suite tasks.suites:text_to_image`): for a
    text-to-image base model (recipes/base.yaml), which reads no context."""
    return _suite("text_to_image", _specs(n, image_size, seed)[:1], n)


def context_probe(n: int = 16, image_size: int = 32, seed: int = 0) -> Suite:
    """The built-in suite's mask-to-image and subject-driven rows alone (`--suite tasks.suites:context_probe`): for
    the context probe of docs/learning.md (experiments/context_probe.yaml), which trains those two tasks only."""
    keep = ("mask_to_image", "subject_driven")
    return _suite("context_probe", [spec for spec in _specs(n, image_size, seed) if spec[0] in keep], n)


def _specs(n: int, image_size: int, seed: int) -> list[tuple[str, str, Task, dict]]:
    """(set name, split, task, EvalSet fields) of every set, in the order they draw their targets."""
    pool = TRIES_PER_EXAMPLE * n

    def common(k: int) -> dict:
        return {
            "num_examples": pool,
            "seed": EVAL_SEED_OFFSET + 100 * seed + k,
            "image_size": image_size,
            "split": "eval",
        }

    specs: list[tuple[str, str, Task, dict]] = [
        ("text_to_image", "in-domain", TextToImage(**common(0)), {"family": "text_to_image"}),
        (
            "edge_to_image",
            "in-domain",
            Control(**common(1), condition="edge"),
            {"family": "control", "control": "edge"},
        ),
        # Depth and mask fidelity need a depth/mask model on generated images; none ships offline, so these two rows
        # report SC/PQ (their scorer checks the condition against the world's ground truth).
        ("depth_to_image", "in-domain", Control(**common(2), condition="depth"), {}),
        ("mask_to_image", "in-domain", Control(**common(3), condition="mask"), {}),
        ("sketch_to_image", "in-domain", Control(**common(4), condition="sketch"), {}),
        ("subject_driven", "in-domain", SubjectDriven(**common(5), kind="object"), {"family": "subject"}),
        ("faces", "in-domain", SubjectDriven(**common(6), kind="face"), {"family": "subject"}),
        ("styled_generation", "in-domain", StyledGeneration(**common(7)), {}),
        ("style_transfer", "in-domain", StyleTransfer(**common(8)), {}),
    ]
    families = {
        "style_subject": "subject",
        "multi_subject": "subject",
        "control_subject": "subject",
        "control_style": None,
    }
    for k, composition in enumerate(COMPOSITIONS):
        task = ZeroShot(composition, pool, EVAL_SEED_OFFSET + 100 * seed + 10 + k, image_size)
        specs.append((composition.replace("_", "+"), "zero-shot", task, {"family": families[composition]}))
    specs.append(("editing", "editing", Editing(**common(20)), {"family": "editing"}))
    return specs


def _suite(
    name: str, specs: list[tuple[str, str, Task, dict]], n: int, wrap: Callable[[Task], Task] | None = None
) -> Suite:
    used: set[str] = set()
    sets = []
    for set_name, split, task, extra in specs:
        instructions = pick_unused(wrap(task) if wrap else task, n, used)
        sets.append(EvalSet(set_name, split, instructions, **extra))
    return Suite(name=name, sets=sets, score=score, annotators={"edge": edges}, baselines={"background": background})
