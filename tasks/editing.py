"""Editing: change what lies under a mask in a content image (MagicBrush's format, paper §5.3), or anywhere in it.

Owns the `Editing` task plugin. As in the paper's Fig 7, the mask and the source image go in as context entries,
"[ref#1] mask" and "[ref#2] content image", and the payload reads "Edit the [ref#1] mask area of the [ref#2]
content image and reflect the change: <instruction>" (the first template of tasks/templates/editing.txt; the others
rephrase it, all with the placeholder {change} and both markers). The instruction's `mask` is the edit mask too.

- World: scene i, one edit — recolour, reshape or re-pattern an object, add an object (to a one-object scene) or
  remove one (from a two-object scene) — and its mask: every pixel either version of the edited object touches,
  grown by one pixel, so source and target are identical outside it. Source and edited scene are both of the
  task's content split. Inputs for scoring: "text" (the edit happened) and "source" (the rest is preserved).
- Dataset, MagicBrush's format: `source_img`, `mask_img` (white = the area to edit), `instruction`, `target_img`;
  `osunlp/MagicBrush` reads with no column mapping. Source, mask and target must have one size (else the row is
  bad: the edit would not line up); non-binary masks are bad rows unless `source.mask_threshold` is set.
- Dataset, InstructPix2Pix's format: (source, instruction, edited) with no mask — `input_image` (or
  `original_image`, as in `timbrooks/instructpix2pix-clip-filtered`), `edit_prompt`, `edited_image` — reads with no
  column mapping too; any column the source maps, or the dataset has under MagicBrush's name, wins. A row without a
  mask gets a **full mask** (the whole image white) rather than losing the mask item: the paper's only editing
  format (Fig 7) names "[ref#1] mask", and "edit the whole-image mask area" states exactly InstructPix2Pix's
  contract — the edit may touch any pixel — so MagicBrush and InstructPix2Pix rows share one instruction format and
  one template file. Eval metrics "outside the mask" are NaN (empty) for those rows and left out of the means.
"""

from __future__ import annotations

import random
from dataclasses import asdict, replace
from pathlib import Path

from PIL import Image, ImageFilter

from tasks.scoring import object_checks
from tasks.world import (
    COLOURS,
    PATTERNS,
    POSITION_PAIRS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    DrawsFromWorld,
    Scene,
    SceneObject,
    Split,
    check_split,
    content_split,
    render,
    silhouettes,
)
from zoo.instruction import ContextItem, Instruction
from zoo.sources import DatasetSource, RowError, fit_square
from zoo.task import TemplatedTask

MASK_TEXT, CONTENT_TEXT = "[ref#1] mask", "[ref#2] content image"
STYLE = "flat"
EDITS = ("recolour", "reshape", "repattern", "add", "remove")
EDIT_TRIES = 32
REQUIRED = ("source_img", "instruction", "target_img")
# InstructPix2Pix's names for the required columns, read when the source maps none (its format has no mask).
INSTRUCTPIX2PIX = {
    "source_img": ("input_image", "original_image"),
    "instruction": ("edit_prompt",),
    "target_img": ("edited_image",),
}


def edit_scene(scene: Scene, rng: random.Random) -> tuple[Scene, str, str, dict[str, list[str]]]:
    """(edited scene, edit kind, instruction, scoring conditions) for one random edit of `scene`."""
    free = [p for p in POSITIONS if len(scene.objects) == 1 and {p, scene.objects[0].position} in _APART]
    kinds = [k for k in EDITS if (k != "add" or free) and (k != "remove" or len(scene.objects) > 1)]
    kind = rng.choice(kinds)
    k = rng.randrange(len(scene.objects))
    obj = scene.objects[k]
    name = f"{obj.colour} {obj.shape}"

    def with_object(new: SceneObject) -> Scene:
        return Scene(scene.background, (*scene.objects[:k], new, *scene.objects[k + 1 :]))

    if kind == "recolour":  # to a colour no object has, so the caption still tells the objects apart
        colour = rng.choice([c for c in COLOURS if c not in {o.colour for o in scene.objects}])
        edited = with_object(replace(obj, colour=colour))
        return edited, kind, f"change the {name} to {colour}", _checks(edited, k, "colour")
    if kind == "reshape":
        shape = rng.choice([s for s in SHAPES if s != obj.shape])
        edited = with_object(replace(obj, shape=shape))
        return edited, kind, f"turn the {name} into a {shape}", _checks(edited, k, "shape")
    if kind == "repattern":
        pattern = rng.choice([p for p in PATTERNS if p != obj.pattern])
        edited = with_object(replace(obj, pattern=pattern))
        return edited, kind, f"make the {name} {pattern}", _checks(edited, k, "pattern")
    if kind == "add":  # into the half opposite the lone object, as the world's two-object scenes are laid out
        position = rng.choice(free)
        colour = rng.choice([c for c in COLOURS if c != obj.colour])
        new = SceneObject(rng.choice(SHAPES), colour, rng.choice(PATTERNS), position, rng.choice(list(SIZES)))
        edited = Scene(scene.background, (*scene.objects, new))
        text = f"add a {new.size} {new.colour} {new.pattern} {new.shape} {POSITION_PHRASES[position]}"
        conditions = {"text": [*object_checks(edited, "colour", "shape", "position", objects=range(1, 2)), "unedited"]}
        return edited, kind, text, {**conditions, "source": _kept(edited, range(0, 1))}
    edited = Scene(scene.background, tuple(o for i, o in enumerate(scene.objects) if i != k))
    conditions = {"text": ["unedited"], "source": _kept(edited, range(len(edited.objects)))}
    return edited, kind, f"remove the {name}", conditions


def _checks(edited: Scene, k: int, attribute: str) -> dict[str, list[str]]:
    kept = [i for i in range(len(edited.objects)) if i != k]
    return {"text": [f"object{k}.{attribute}", "unedited"], "source": _kept(edited, kept)}


def _kept(edited: Scene, kept: range | list[int]) -> list[str]:
    """The "source" input: the picture outside the mask is preserved, and so is every object the edit leaves alone
    (an image that drops them is not a preserved source, however close its pixels)."""
    return ["preserve", *object_checks(edited, "shape", "position", objects=kept)]


# Positions that never overlap: the opposite halves of the world's two-object scenes.
_APART = [set(pair) for pair in POSITION_PAIRS]


def edit_mask(before: Scene, after: Scene, size: int) -> Image.Image:
    """Every pixel an object that differs between the scenes touches, grown by one pixel (binary L, 255 inside)."""
    changed = set(before.objects) ^ set(after.objects)
    return silhouettes(changed, size, touched=True).filter(ImageFilter.MaxFilter(3))


class Editing(DrawsFromWorld, TemplatedTask):
    name = "editing"
    default_templates = Path(__file__).parent / "templates" / "editing.txt"
    placeholders = frozenset({"change"})
    markers = ("[ref#1]", "[ref#2]")
    # All optional to `SourceRows`: `index_rows` recognises InstructPix2Pix's names before asking for a mapping.
    optional_columns = ("source_img", "mask_img", "instruction", "target_img")

    def __init__(
        self,
        num_examples: int | None = None,
        seed: int = 0,
        image_size: int = 32,
        templates: str | None = None,
        source: DatasetSource | None = None,
        split: Split = "train",
    ) -> None:
        """Args beyond `zoo.task.TemplatedTask`'s:
        split: "train" or "eval": which side of the world's content split (`tasks.world.content_split`) the
            built-in examples come from; evaluation sets use "eval", so their scenes were never trained on.
        """
        self.split = check_split(split)
        super().__init__(num_examples, seed, image_size, templates, source)

    def from_world(self, index: int, rng: random.Random) -> Instruction:
        scene = self.world.scene(index)
        while True:  # an edit whose result is of the split too; a source with none within a few tries is replaced
            for _ in range(EDIT_TRIES):
                edited, kind, change, conditions = edit_scene(scene, rng)
                if content_split(edited) == self.split:
                    break
            else:
                scene = self.world.scene(rng.randrange(2**31))
                continue
            break
        mask = edit_mask(scene, edited, self.image_size)
        return self._instruction(
            rng,
            change,
            mask,
            render(scene, self.image_size, STYLE),
            render(edited, self.image_size, STYLE),
            meta={
                "edit": kind,
                "change": change,
                "source_scene": asdict(scene),
                "scene": asdict(edited),
                "style": STYLE,
                "conditions": conditions,
            },
        )

    def index_rows(self) -> list[int]:
        missing = [column for column in REQUIRED if not self.rows.adopt(column, INSTRUCTPIX2PIX[column])]
        if missing:
            hint = ", ".join(f"{column}: <column>" for column in missing)
            raise ValueError(
                f"task {self.name!r}: source {self.source.path!r} has no {', '.join(missing)} column; available "
                f"columns: {self.rows.available}. Editing reads MagicBrush's columns (source_img, instruction, "
                "target_img, optional mask_img) or InstructPix2Pix's (input_image or original_image, edit_prompt, "
                f"edited_image) unmapped; map yours under source.columns, e.g. columns: {{{hint}}}"
            )
        return super().index_rows()

    def from_rows(self, index: int, rng: random.Random) -> Instruction:
        row = self.index[index]
        change = self.rows.text(row, "instruction")
        source, target = self.rows.image(row, "source_img"), self.rows.image(row, "target_img")
        if self.rows.has("mask_img"):
            mask = self.rows.mask(row, "mask_img")
        else:  # InstructPix2Pix: the whole image may change (see the module docstring)
            mask = Image.new("L", source.size, 255)
        for column, image in (("mask_img", mask), ("target_img", target)):
            if image.size != source.size:
                raise RowError(self.rows.row_id(row), f"{column} is {image.size}, source_img is {source.size}")
        size = self.image_size
        return self._instruction(
            rng,
            change,
            fit_square(mask, size, Image.Resampling.NEAREST),
            fit_square(source, size),
            fit_square(target, size),
            meta={"change": change, "row_id": self.rows.row_id(row)},
        )

    def _instruction(
        self, rng: random.Random, change: str, mask: Image.Image, source: Image.Image, target: Image.Image, meta: dict
    ) -> Instruction:
        return Instruction(
            text=self.fill(rng, change=change),
            context=[ContextItem("[ref#1]", MASK_TEXT, mask), ContextItem("[ref#2]", CONTENT_TEXT, source)],
            target=target,
            mask=mask,
            task=self.name,
            meta=meta,
        )
