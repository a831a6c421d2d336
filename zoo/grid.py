"""Contact sheets: instructions laid out beside the images they produced.

One row per instruction: its context images (each labelled with its prompt), the generated image, the target if
known, and the payload text underneath. Images are enlarged with nearest-neighbour so small pixels stay visible.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from zoo.instruction import Instruction

CELL = 128  # pixels per image cell
PAD = 6
TEXT_LINES = 3
LINE = 12


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] → RGB PIL image."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


def instruction_grid(instructions: Sequence[Instruction], generated: torch.Tensor) -> Image.Image:
    """A contact sheet of `instructions` with their `generated` images (B, 3, H, W) in [-1, 1]."""
    if len(instructions) != generated.shape[0]:
        raise ValueError(f"{len(instructions)} instructions but {generated.shape[0]} generated images")
    font = ImageFont.load_default()
    columns = max(len(i.context) for i in instructions) + 2  # context..., generated, target
    label_h = LINE + 2
    row_h = label_h + CELL + TEXT_LINES * LINE + 2 * PAD
    sheet = Image.new("RGB", (PAD + columns * (CELL + PAD), row_h * len(instructions)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (instruction, image) in enumerate(zip(instructions, generated)):
        top = row * row_h + PAD
        cells = [(item.prompt, item.image) for item in instruction.context]
        cells += [(None, None)] * (columns - 2 - len(cells))
        cells += [("generated", image), ("target", instruction.target)]
        for column, (label, cell) in enumerate(cells):
            left = PAD + column * (CELL + PAD)
            if cell is None:
                continue
            draw.text((left, top), label[:24], fill="black", font=font)
            sheet.paste(to_pil(cell).resize((CELL, CELL), Image.NEAREST), (left, top + label_h))
        wrapped = textwrap.wrap(f"[{instruction.task}] {instruction.text}", width=columns * (CELL + PAD) // 7)
        for line_number, line in enumerate(wrapped[:TEXT_LINES]):
            draw.text((PAD, top + label_h + CELL + PAD + line_number * LINE), line, fill="black", font=font)
    return sheet
