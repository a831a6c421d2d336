"""Contact sheets: instructions laid out beside the images they produced (or, for a data preview, without them).

One row per instruction: its context images (each labelled with its prompt, marker included), the generated image
when there is one, the target if known, the mask when any instruction has one, and the payload text underneath,
wrapped to the sheet's width in full (a row is as tall as its text needs). Images are enlarged with
nearest-neighbour so small pixels stay visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from zoo.instruction import Instruction

CELL = 128  # pixels per image cell
PAD = 6
LINE = 12


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] → RGB PIL image."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


def mask_to_image(mask: torch.Tensor) -> torch.Tensor:
    """(1, H, W) in {0, 1} → (3, H, W) in [-1, 1]: white where the mask is set."""
    return (mask.float() * 2 - 1).expand(3, -1, -1)


def wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float) -> list[str]:
    """`text` in lines no wider than `width` pixels in `font`, every character kept; a word wider than a line is
    split across lines."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for character in word:
            if line and font.getlength(line + character) > width:
                lines.append(line)
                line = ""
            line += character
    return [*lines, line] if line else lines


def instruction_grid(instructions: Sequence[Instruction], generated: torch.Tensor | None = None) -> Image.Image:
    """A contact sheet of `instructions`, with their `generated` images (B, 3, H, W) in [-1, 1] when given."""
    if not instructions:
        raise ValueError("instruction_grid needs at least one instruction")
    if generated is not None and len(instructions) != generated.shape[0]:
        raise ValueError(f"{len(instructions)} instructions but {generated.shape[0]} generated images")
    font = ImageFont.load_default()
    tail = ["generated"] if generated is not None else []
    tail += ["target"]
    tail += ["mask"] if any(i.mask is not None for i in instructions) else []
    columns = max(len(i.context) for i in instructions) + len(tail)  # context..., [generated], target, [mask]
    label_h = LINE + 2
    width = PAD + columns * (CELL + PAD)
    texts = [wrap(f"[{i.task}] {i.text}", font, width - 2 * PAD) for i in instructions]
    tops = [0]
    for lines in texts:
        tops.append(tops[-1] + label_h + CELL + len(lines) * LINE + 2 * PAD)
    sheet = Image.new("RGB", (width, tops[-1]), "white")
    draw = ImageDraw.Draw(sheet)
    for row, instruction in enumerate(instructions):
        top = tops[row] + PAD
        images = {
            "generated": None if generated is None else generated[row],
            "target": instruction.target,
            "mask": None if instruction.mask is None else mask_to_image(instruction.mask),
        }
        cells = [(item.prompt, item.image) for item in instruction.context]
        cells += [(None, None)] * (columns - len(tail) - len(cells))
        cells += [(name, images[name]) for name in tail]
        for column, (label, cell) in enumerate(cells):
            left = PAD + column * (CELL + PAD)
            if cell is None:
                continue
            draw.text((left, top), label[:24], fill="black", font=font)
            sheet.paste(to_pil(cell).resize((CELL, CELL), Image.NEAREST), (left, top + label_h))
        for line_number, line in enumerate(texts[row]):
            draw.text((PAD, top + label_h + CELL + PAD + line_number * LINE), line, fill="black", font=font)
    return sheet
