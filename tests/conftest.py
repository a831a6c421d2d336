"""Shared fixtures: a tiny seeded InstructImagen and hand-made instructions with 0, 1 and 2 context items.

Everything is tiny (16 px images, the `tiny` UNet preset, the `builtin:tiny-t5` text encoder with 32 tokens) so the
whole suite runs in seconds on a 2-core CPU.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.instruction import ContextItem, Instruction, InstructionBatch, collate_instructions

REPO_ROOT = Path(__file__).resolve().parents[1]


def shipped_models() -> list[str]:
    """The folders under checkpoints/ that .gitignore admits: the models kept in git."""
    text = (REPO_ROOT / ".gitignore").read_text()
    return re.findall(r"^!checkpoints/([^/\s]+)/$", text, flags=re.MULTILINE)


IMAGE_SIZE = 16
TEXT_MAX_LENGTH = 32

# The tensors here are tiny: intra-op threads only add synchronisation, and on a busy 2-core machine OpenMP
# spin-waiting makes each op hundreds of times slower. One thread keeps the suite fast and its timings stable, and
# lets `make test` run one pytest-xdist worker per core; the commands the tests start inherit the same setting.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same global random state."""
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


def build_tiny_model(seed: int = 0, **overrides):
    """A tiny InstructImagen built under a fixed seed (the global RNG is left as it was)."""
    from zoo.lit.module import InstructImagen

    kwargs = dict(unet="tiny", text_encoder="builtin:tiny-t5", text_max_length=TEXT_MAX_LENGTH, image_size=IMAGE_SIZE)
    kwargs.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return InstructImagen(**kwargs)


SR_SIZE = 2 * IMAGE_SIZE


def build_sr(seed: int = 0, **overrides):
    """A tiny SuperResolution stage (IMAGE_SIZE → SR_SIZE) built under a fixed seed, like `build_tiny_model`."""
    from zoo.lit.sr_module import SuperResolution

    kwargs = dict(unet="tiny", text_max_length=TEXT_MAX_LENGTH, image_size=SR_SIZE, lowres_size=IMAGE_SIZE)
    kwargs.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SuperResolution(**kwargs)


def perturb_context_layers(module: torch.nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised context layers weights, so that the context changes the output (and a round trip
    that lost the layers would show)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "context_layers" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture
def make_tiny_model() -> Callable[..., object]:
    """A factory for fresh tiny models (for tests that train or otherwise change the model)."""
    return build_tiny_model


@pytest.fixture(scope="session")
def tiny_model():
    """One shared tiny model for read-only tests (do not train it; monkeypatch what you change)."""
    model = build_tiny_model()
    model.eval()
    return model


def random_image(generator: torch.Generator, size: int = IMAGE_SIZE) -> torch.Tensor:
    """A float image (3, size, size) in [0, 1], the form the Instruction constructor takes."""
    return torch.rand(3, size, size, generator=generator)


@pytest.fixture
def hand_instructions() -> list[Instruction]:
    """Instructions with 0, 1 and 2 context items, built from plain random tensors."""
    g = torch.Generator().manual_seed(1)
    return [
        Instruction("Draw a red circle on the left", target=random_image(g), task="t2i"),
        Instruction(
            "Draw a blue square in the style of [ref#1]",
            context=[ContextItem("[ref#1]", "a [ref#1] style image", random_image(g))],
            target=random_image(g),
            task="style",
        ),
        Instruction(
            "Draw [ref#1] in the style of [ref#2]",
            context=[
                ContextItem("[ref#1]", "[ref#1] toy", random_image(g)),
                ContextItem("[ref#2]", "a [ref#2] style image", random_image(g)),
            ],
            target=random_image(g),
            task="two_refs",
        ),
    ]


@pytest.fixture(scope="session")
def task_instructions() -> list[Instruction]:
    """Instructions with 0, 1 and 2 context items, from the built-in task plugins (16 px)."""
    from tasks.styled_generation import StyledGeneration
    from tasks.subject_driven import SubjectDriven
    from tasks.text_to_image import TextToImage

    subject = SubjectDriven(num_examples=20, seed=0, image_size=IMAGE_SIZE)
    two = next(subject[i] for i in range(len(subject)) if len(subject[i].context) == 2)
    return [
        TextToImage(num_examples=4, seed=0, image_size=IMAGE_SIZE)[0],
        StyledGeneration(num_examples=4, seed=0, image_size=IMAGE_SIZE)[0],
        two,
    ]


@pytest.fixture
def task_batch(task_instructions: list[Instruction]) -> InstructionBatch:
    return collate_instructions(task_instructions)


def toy_model_fn(calls: list[tuple[str, ...]] | None = None):
    """A tiny deterministic 'network': each branch gives a different smooth function of (x_t, t)."""
    offsets = {"full": 0.3, "text": 0.1, "null": -0.2}

    def model_fn(x_t, t, names):
        if calls is not None:
            calls.append(tuple(names))
        scale = (t.float() / 1000).view(-1, 1, 1, 1)
        return [0.5 * x_t * scale + offsets[name] * (1 - scale) for name in names]

    return model_fn
