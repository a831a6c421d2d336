"""The multimodal instruction: the one schema every task and every dataset becomes.

An instruction (arXiv 2401.01952 §3.1) is a *payload text* with `[ref#N]` markers plus a *context* of
(marker + short text, image) pairs. Here it also carries what training needs: the target image, an optional
mask and the task name. Everything is validated at construction, so a malformed example fails where it is
made, with a `ValueError` naming the marker or field, and never deep inside a training step.

Images are stored one way only: float32 tensors (3, H, W) in [-1, 1]; masks float32 (1, H, W) in {0, 1}.
`collate_instructions` batches instructions with different numbers of context items by padding to the
largest count in the batch and returning a boolean mask; nothing is truncated.

Only stdlib, torch and PIL/torchvision are imported here: this is the bottom of the dependency stack.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

# A well-formed marker: "[ref#1]", "[ref#2]", ... (numbering starts at 1, as in the paper's figures).
MARKER_RE = re.compile(r"\[ref#([1-9][0-9]*)\]")
# Anything that looks like an attempted marker ("[ref1]", "[ref#]", "[ref#0]", "[REF#x]") is checked against MARKER_RE.
_MARKER_LIKE_RE = re.compile(r"\[\s*ref[^\]]*\]", re.IGNORECASE)

ImageLike = torch.Tensor | Image.Image
# Integer images are scaled by their type's full range, so 8- and 16-bit copies of a picture agree.
INTEGER_RANGES = {torch.uint8: 255.0, torch.uint16: 65535.0}
# PIL's 16-bit grayscale modes; "I" (32-bit) is what older Pillow and some TIFFs give for 16-bit samples, so it is
# read as 16-bit too and refused when its values do not fit.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def find_markers(text: str) -> list[str]:
    """The well-formed markers in `text`, in order of first appearance, without repeats.

    Raises:
        ValueError: if `text` holds something marker-like that is malformed (e.g. "[ref1]" or "[ref#0]").
    """
    for candidate in _MARKER_LIKE_RE.findall(text):
        if not MARKER_RE.fullmatch(candidate):
            raise ValueError(
                f"malformed reference marker {candidate!r} in {text!r}: "
                "markers are written '[ref#N]' with N = 1, 2, ..."
            )
    return list(dict.fromkeys(m.group(0) for m in MARKER_RE.finditer(text)))


def to_image_tensor(image: ImageLike, name: str = "image") -> torch.Tensor:
    """Converts an image to the one stored form: float32 (3, H, W) in [-1, 1].

    Accepts PIL images of any mode (L, RGBA, CMYK, I;16, ...) and tensors (C, H, W) with C in {1, 3, 4}: uint8 in
    [0, 255], uint16 in [0, 65535] or floating point in [0, 1]. Integer images are scaled by their type's range (a
    16-bit copy of an 8-bit picture gives the same tensor), never by their own maximum. Grayscale is repeated to
    RGB; alpha is composited on white.

    Raises:
        ValueError: naming `name` for a wrong shape, an empty (0-pixel) image, NaN or infinite values, or floats
            outside [0, 1].
        TypeError: naming `name` for anything that is not an image, or an unsupported dtype.
    """
    if isinstance(image, Image.Image):
        image = _pil_to_tensor(image, name)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name}: expected a PIL image or a torch.Tensor, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"{name}: expected shape (C, H, W) with C in 1, 3, 4; got {tuple(image.shape)}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name}: the image is empty ({image.shape[1]}×{image.shape[2]} pixels); give one with pixels")
    if image.dtype in INTEGER_RANGES:
        image = image.float() / INTEGER_RANGES[image.dtype]
    elif image.is_floating_point():
        image = image.float()
        if not torch.isfinite(image).all():
            raise ValueError(f"{name}: the image holds NaN or infinite values; check how it was computed or decoded")
        lo, hi = image.min().item(), image.max().item()
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{name}: floating-point images must lie in [0, 1]; got values in [{lo:.3f}, {hi:.3f}]")
        image = image.clamp(0, 1)
    else:
        raise TypeError(f"{name}: unsupported dtype {image.dtype}; use uint8, uint16 or a floating-point dtype")
    if image.shape[0] == 4:  # composite alpha on white so transparent areas do not turn black
        rgb, alpha = image[:3], image[3:]
        image = rgb * alpha + (1 - alpha)
    elif image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image * 2 - 1).contiguous()


def to_mask_tensor(mask: ImageLike, name: str = "mask") -> torch.Tensor:
    """Converts a binary mask to float32 (1, H, W) in {0, 1}; anything not binary is an error, never thresholded."""
    if isinstance(mask, Image.Image):
        mask = torch.from_numpy(np.array(mask.convert("L"))).unsqueeze(0)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a PIL image or a torch.Tensor, got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3 or mask.shape[0] != 1:
        raise ValueError(f"{name}: expected shape (1, H, W) or (H, W); got {tuple(mask.shape)}")
    if mask.numel() == 0:
        raise ValueError(f"{name}: the mask is empty ({mask.shape[1]}×{mask.shape[2]} pixels); give a mask with pixels")
    mask = mask.float()
    if mask.max() > 1:  # 8-bit masks store 0/255
        mask = mask / 255.0
    if not torch.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{name}: a mask must be binary (0/1 or 0/255); found other values")
    return mask.contiguous()


def _pil_to_tensor(image: Image.Image, name: str) -> torch.Tensor:
    """A uint8 (3, H, W) tensor, or for 16-bit grayscale a uint16 (1, H, W) one (full precision, scaled later)."""
    if image.mode in SIXTEEN_BIT_MODES:
        array = np.asarray(image).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(
                f"{name}: a mode-{image.mode} image with values in [{array.min()}, {array.max()}]; 16-bit images hold "
                "0..65535 (convert other integer images to 8 or 16 bits first)"
            )
        return torch.from_numpy(array.astype(np.uint16)).unsqueeze(0)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    image = image.convert("RGB")  # CMYK, L, YCbCr, ... all end here
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


@dataclass
class ContextItem:
    """One (marker + short text, image) pair of the multimodal context.

    Args:
        marker: the reference marker this item answers, e.g. "[ref#1]".
        text: a short text about the image, e.g. "a [ref#1] style image". If it does not contain the marker,
            the marker is put in front (see `prompt`), so the text encoder always sees which reference this is.
        image: PIL image or tensor; stored as float32 (3, H, W) in [-1, 1].
    """

    marker: str
    text: str
    image: ImageLike

    def __post_init__(self) -> None:
        if not isinstance(self.marker, str) or not MARKER_RE.fullmatch(self.marker):
            raise ValueError(f"context marker {self.marker!r} is malformed: write it as '[ref#N]' with N = 1, 2, ...")
        if not isinstance(self.text, str):
            raise TypeError(f"context item {self.marker}: text must be a str, got {type(self.text).__name__}")
        others = [m for m in find_markers(self.text) if m != self.marker]
        if others:
            raise ValueError(f"context item {self.marker}: its text {self.text!r} names other markers {others}")
        self.image = to_image_tensor(self.image, name=f"context item {self.marker} image")

    @property
    def prompt(self) -> str:
        """The text the encoder sees: the short text, with the marker in front if the text lacks it."""
        return self.text if self.marker in self.text else f"{self.marker} {self.text}".strip()


@dataclass
class Instruction:
    """A payload text with `[ref#N]` markers, its context items, and (for training) the target.

    Args:
        text: the payload instruction, e.g. "Draw a red circle in the style of [ref#1]".
        context: ordered context items; every marker in `text` needs at least one item (several items may share
            a marker, e.g. two photos of one subject), and every item's marker must appear in `text`.
        target: the image to generate (training/evaluation); None at generation time.
        mask: optional binary mask, same size as `target` (editing tasks).
        task: the task name this instruction came from (for per-task sampling, logging and scoring).
        meta: free-form ground truth kept alongside (attributes a scorer can check); never fed to the model.
    """

    text: str
    context: list[ContextItem] = field(default_factory=list)
    target: ImageLike | None = None
    mask: ImageLike | None = None
    task: str = "unknown"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"instruction text must be a str, got {type(self.text).__name__}")
        if not self.text.strip():
            raise ValueError(f"instruction text is empty (task {self.task!r}); every instruction needs a payload text")
        payload_markers = find_markers(self.text)
        self.context = list(self.context)
        for index, item in enumerate(self.context):
            if not isinstance(item, ContextItem):
                raise TypeError(f"context[{index}] must be a ContextItem, got {type(item).__name__}")
        context_markers = {item.marker for item in self.context}
        for marker in payload_markers:
            if marker not in context_markers:
                raise ValueError(f"marker {marker} appears in the text {self.text!r} but no context item provides it")
        for item in self.context:
            if item.marker not in payload_markers:
                raise ValueError(
                    f"context item {item.marker} ({item.text!r}) is never referenced in the text {self.text!r}"
                )
        if self.target is not None:
            self.target = to_image_tensor(self.target, name="target")
        if self.mask is not None:
            self.mask = to_mask_tensor(self.mask)
            if self.target is not None and self.mask.shape[-2:] != self.target.shape[-2:]:
                raise ValueError(
                    f"mask size {tuple(self.mask.shape[-2:])} differs from target size {tuple(self.target.shape[-2:])}"
                )

    @property
    def markers(self) -> list[str]:
        return find_markers(self.text)

    def resized(self, size: int) -> Instruction:
        """This instruction with target, mask and context images at size × size (antialiased; masks by nearest
        neighbour). Images already at that size are shared, not copied.

        The images stay in [-1, 1] and nothing is validated again: resizing a valid instruction keeps it valid.
        """
        if size < 1:
            raise ValueError(f"an instruction is resized to a positive size, got {size}")

        def image(x: torch.Tensor) -> torch.Tensor:
            if tuple(x.shape[-2:]) == (size, size):
                return x
            return TF.resize(x, [size, size], antialias=True).clamp(-1, 1)

        def mask(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None or tuple(x.shape[-2:]) == (size, size):
                return x
            return TF.resize(x, [size, size], interpolation=TF.InterpolationMode.NEAREST)

        # Shallow copies with new images: a dataclass constructor would run __post_init__'s checks again.
        resized = copy.copy(self)
        resized.context = [copy.copy(item) for item in self.context]
        for item in resized.context:
            item.image = image(item.image)
        resized.target = None if self.target is None else image(self.target)
        resized.mask = mask(self.mask)
        return resized


@dataclass
class InstructionBatch:
    """A collated batch. K is the largest number of context items in the batch; shorter contexts are padded.

    Attributes:
        texts: B payload texts.
        context_texts: B lists of K context prompts ("" where padded).
        context_images: (B, K, 3, H, W) float32 in [-1, 1], zeros where padded.
        context_mask: (B, K) bool, True for real items.
        target: (B, 3, H, W) or None at generation time.
        mask: (B, 1, H, W) or None when no instruction in the batch has a mask (then ones where one is absent).
        tasks: B task names.
    """

    texts: list[str]
    context_texts: list[list[str]]
    context_images: torch.Tensor
    context_mask: torch.Tensor
    target: torch.Tensor | None
    mask: torch.Tensor | None
    tasks: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def to(self, device: torch.device | str) -> InstructionBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return InstructionBatch(
            self.texts,
            self.context_texts,
            move(self.context_images),
            move(self.context_mask),
            move(self.target),
            move(self.mask),
            self.tasks,
        )


def collate_instructions(batch: Sequence[Instruction], image_size: tuple[int, int] | None = None) -> InstructionBatch:
    """Stacks instructions into an `InstructionBatch`, padding contexts to the longest one.

    All images must already share one size (the data module resizes); `image_size` (H, W) is used for an all-empty
    context or target-less batch. A size mismatch is an error naming the instruction and the item.
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch of instructions")
    for index, instruction in enumerate(batch):
        if not isinstance(instruction, Instruction):
            raise TypeError(f"batch[{index}] must be an Instruction, got {type(instruction).__name__}")
    size = image_size
    for instruction in batch:
        for image in [instruction.target, *(item.image for item in instruction.context)]:
            if image is not None:
                size = size or tuple(image.shape[-2:])
                break
    if size is None:
        raise ValueError("cannot infer the image size of a batch with no images; pass image_size")
    for index, instruction in enumerate(batch):
        named = [("target", instruction.target), ("mask", instruction.mask)]
        named += [(f"context item {item.marker}", item.image) for item in instruction.context]
        for name, image in named:
            if image is not None and tuple(image.shape[-2:]) != tuple(size):
                raise ValueError(
                    f"batch[{index}] ({instruction.task}): {name} is {tuple(image.shape[-2:])}, "
                    f"expected {tuple(size)}; resize images before collating"
                )

    k = max(len(instruction.context) for instruction in batch)
    b, (h, w) = len(batch), size
    context_images = torch.zeros(b, k, 3, h, w)
    context_mask = torch.zeros(b, k, dtype=torch.bool)
    context_texts = [[""] * k for _ in range(b)]
    for i, instruction in enumerate(batch):
        for j, item in enumerate(instruction.context):
            context_images[i, j] = item.image
            context_mask[i, j] = True
            context_texts[i][j] = item.prompt

    targets = [instruction.target for instruction in batch]
    if all(t is None for t in targets):
        target = None
    elif any(t is None for t in targets):
        raise ValueError("some instructions in the batch have a target and some do not; batch them separately")
    else:
        target = torch.stack(targets)

    masks = [instruction.mask for instruction in batch]
    mask = None
    if any(m is not None for m in masks):
        mask = torch.stack([m if m is not None else torch.ones(1, h, w) for m in masks])

    return InstructionBatch(
        texts=[instruction.text for instruction in batch],
        context_texts=context_texts,
        context_images=context_images,
        context_mask=context_mask,
        target=target,
        mask=mask,
        tasks=[instruction.task for instruction in batch],
    )
