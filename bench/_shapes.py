"""The shapes the scale benchmarks (`memory.py`, `gpu_throughput.py`) measure: presets, the paper's base narrowed, and
a training batch with 3 context items."""

from __future__ import annotations

from typing import Any

import torch

from zoo.instruction import ContextItem, Instruction, InstructionBatch, collate_instructions
from zoo.lit.module import InstructImagen
from zoo.models.presets import paper_base128

CONTEXT_ITEMS = 3  # the paper's multi-context setting
TEXT_WIDTH = 128  # builtin:small-t5's


def paper_base128_shaped(divisor: int) -> dict[str, Any]:
    """`paper_base128` with every width ÷ `divisor` (depth, resolutions and block types kept), reading 128-d text.

    The text is `builtin:small-t5`'s (T5-XXL is not available offline): `encoder_hid_proj` projects 128 → the
    cross-attention width instead of 4096 →, a difference of one small linear layer per text token.
    """
    config = paper_base128()
    widths = tuple(c // divisor for c in config["block_out_channels"])
    config.update(
        block_out_channels=widths,
        cross_attention_dim=widths[-1],
        encoder_hid_dim=TEXT_WIDTH,
        norm_num_groups=min(32, widths[0]),
        attention_head_dim=min(64, widths[-1]),
        addition_embed_type_num_heads=4,  # pooling the 128-d text: 4 heads of 32, as `demo_pooled`
    )
    return config


SHAPES = {
    # name → (unet config or preset, text encoder, image size)
    "tiny": ("tiny", "builtin:tiny-t5", 16),
    "demo": ("demo", "builtin:small-t5", 32),
    "paper-tiny": (paper_base128_shaped(64), "builtin:small-t5", 32),
    "paper-narrow": (paper_base128_shaped(16), "builtin:small-t5", 128),
    "paper": (paper_base128_shaped(1), "builtin:small-t5", 128),
}


def build(shape: str, **switches: Any) -> InstructImagen:
    """The base stage at `shape` (a name of `SHAPES`), seeded, with the scale switches given."""
    unet, encoder, size = SHAPES[shape]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return InstructImagen(unet=unet, text_encoder=encoder, text_max_length=64, image_size=size, **switches)


def context_batch(b: int, size: int) -> InstructionBatch:
    """b instructions with `CONTEXT_ITEMS` context items each, at `size` px."""
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(b):
        context = [
            ContextItem(f"[ref#{k}]", f"a [ref#{k}] image", torch.rand(3, size, size, generator=g))
            for k in range(1, CONTEXT_ITEMS + 1)
        ]
        text = f"Draw [ref#1] beside [ref#2] in the style of [ref#3], number {i}"
        items.append(Instruction(text, context=context, target=torch.rand(3, size, size, generator=g)))
    return collate_instructions(items)
