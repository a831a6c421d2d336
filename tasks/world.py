"""The built-in world: seeded procedural scenes of coloured shapes, their captions, and whole-image render styles.

Every built-in task is generated from here, offline and deterministically. A `Scene` is a background and one or
two `SceneObject`s; `World(seed).scene(index)` is a pure function of (seed, index); `caption` describes a scene in
plain English; `render` draws it in one of `STYLES`, at 4x and box-downsampled so even 16-32 px images are clean.
Named subjects (`SUBJECTS`) are fixed (shape, colour, pattern) identities that `subject_scene` places anywhere:
toys, and faces (an oval with eyes and a mouth; the paper's face data, CelebA, as a subject kind).

Derived maps, for the control and editing tasks: `depth_map` (nearer = brighter: large objects and objects lower
in the frame are nearer; the background recedes upwards), `object_mask` (the silhouettes), `sketch` (thin dark
jittered outlines on white) and `render_background` (a scene with its objects removed).

Content split: every picture belongs to "train" or "eval" by a stable hash of what it shows (`content_split(scene,
style)`: the scene, less what the style cannot show — line art drops patterns and the background, sepia colours and
the background — so two scenes that render alike always fall on the same side), about one in `EVAL_SHARE` to
"eval". A scene drawn in a style must be of the split both as drawn and as its caption describes it (flat), so
neither the picture nor the words reach the other side. Training tasks draw only train scenes (targets and
references alike) and evaluation sets only eval scenes as targets, so no evaluation image or caption can have been
trained on, whatever the seeds: `World(seed, split)` and `subject_placements(name, split, style)` keep to one side.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

COLOURS = {
    "red": (220, 40, 40),
    "orange": (245, 135, 20),
    "yellow": (235, 200, 20),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
}
# Pale tints, so every object colour stands out on every background. Their names share no word with `COLOURS`
# (a payload may name the background without naming an object's colour) and start with a consonant ("on a ...").
BACKGROUNDS = {
    "white": (250, 250, 250),
    "gray": (205, 205, 205),
    "sky": (190, 215, 245),
    "pink": (245, 200, 215),
    "mint": (200, 235, 195),
    "cream": (250, 240, 185),
}
SHAPES = ("circle", "square", "triangle", "cross")
# Shapes only subjects have: random scenes never draw them.
SUBJECT_SHAPES = ("face",)
PATTERNS = ("solid", "striped", "dotted", "checkered")
# Object centre (x, y) as fractions of the image side, and how captions say it.
POSITIONS = {"left": (0.25, 0.5), "center": (0.5, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75)}
POSITION_PHRASES = {
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
# Half-extent of an object as a fraction of the image side: a large object still fits inside its half of the image.
SIZES = {"small": 0.14, "large": 0.22}
# Two-object scenes put the objects in opposite halves, so they never overlap.
POSITION_PAIRS = (("left", "right"), ("top", "bottom"))
# Every way to place a lone object: (position, size, background).
PLACEMENTS = tuple(itertools.product(POSITIONS, SIZES, BACKGROUNDS))
STYLES = ("flat", "outline", "pastel", "neon", "mosaic", "sepia")
SUPERSAMPLE = 4
MIN_SIZE = 8
# One scene in EVAL_SHARE is held out for evaluation. 5 leaves every subject about 12 of its 60 placements to
# evaluate on (and 48 to learn it from), enough for disjoint 32-example subject, face and control+subject sets.
EVAL_SHARE = 5
SPLITS = ("train", "eval")
Split = Literal["train", "eval"]

Colour = tuple[int, int, int]


def _check(field: str, value: str, known: Iterable[str]) -> None:
    known = list(known)
    if value not in known:
        raise ValueError(f"unknown {field} {value!r}; known: {', '.join(known)}")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    pattern: str
    position: str
    size: str

    def __post_init__(self) -> None:
        _check("shape", self.shape, SHAPES + SUBJECT_SHAPES)
        _check("colour", self.colour, COLOURS)
        _check("pattern", self.pattern, PATTERNS)
        _check("position", self.position, POSITIONS)
        _check("size", self.size, SIZES)


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        _check("background", self.background, BACKGROUNDS)
        object.__setattr__(self, "objects", tuple(self.objects))  # accept any sequence, keep the scene hashable
        if not self.objects:
            raise ValueError("objects: a scene needs at least one object, got none")
        positions = [obj.position for obj in self.objects]
        if len(set(positions)) != len(positions):
            raise ValueError(f"objects: two objects share a position in {positions}")


@dataclass(frozen=True)
class Subject:
    """A named thing with a fixed look; only its placement changes from scene to scene."""

    name: str
    category: str
    shape: str
    colour: str
    pattern: str


SUBJECTS = {
    subject.name: subject
    for subject in (
        Subject("zib", "toy", "circle", "red", "striped"),
        Subject("moko", "toy", "square", "blue", "dotted"),
        Subject("tali", "toy", "triangle", "green", "checkered"),
        Subject("quon", "toy", "cross", "purple", "solid"),
        Subject("bexa", "toy", "circle", "orange", "checkered"),
        Subject("fip", "toy", "square", "yellow", "striped"),
        Subject("ruvo", "toy", "triangle", "purple", "dotted"),
        Subject("nela", "toy", "cross", "blue", "striped"),
        Subject("ada", "person", "face", "orange", "solid"),
        Subject("bram", "person", "face", "purple", "striped"),
        Subject("cleo", "person", "face", "green", "dotted"),
        Subject("dov", "person", "face", "red", "checkered"),
    )
}
SUBJECT_KINDS = {"toy": "object", "person": "face"}


def check_split(split: str, field: str = "split") -> Split:
    _check(field, split, SPLITS)
    return split


# What each style cannot show (measured: these are exactly the attributes along which one-object scenes render
# pixel-identically in that style at 32 px; flat, pastel and mosaic show everything).
STYLE_BLIND = {
    "outline": ("pattern", "background"),
    "neon": ("pattern", "background"),
    "sepia": ("colour", "background"),
}


def content_split(scene: Scene, style: str = "flat") -> Split:
    """ "train" or "eval" for `scene` drawn in `style`: a pure function of what the picture shows (sha256 of the scene
    with the style's blind attributes blanked and its objects in a fixed order, so it is the same in every process
    and for look-alike scenes)."""
    blind = STYLE_BLIND.get(style, ())
    shown = (
        None if "background" in blind else scene.background,
        # sorted: the same objects listed in another order are the same picture
        tuple(
            sorted(
                (
                    o.position,
                    o.shape,
                    o.size,
                    None if "colour" in blind else o.colour,
                    None if "pattern" in blind else o.pattern,
                )
                for o in scene.objects
            )
        ),
    )
    digest = hashlib.sha256(repr(shown).encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") % EVAL_SHARE == 0 else "train"


def random_scene(rng: random.Random) -> Scene:
    """A background and one object, or two in opposite halves, with distinct colours."""
    background = rng.choice(list(BACKGROUNDS))
    positions = rng.choice(POSITION_PAIRS) if rng.random() < 0.5 else (rng.choice(list(POSITIONS)),)
    colours = rng.sample(list(COLOURS), len(positions))  # distinct colours, so a caption tells the objects apart
    objects = tuple(
        SceneObject(rng.choice(SHAPES), colour, rng.choice(PATTERNS), position, rng.choice(list(SIZES)))
        for position, colour in zip(positions, colours)
    )
    return Scene(background, objects)


def in_split(scene: Scene, split: str, styles: Iterable[str] = ()) -> bool:
    """Whether `scene` belongs to `split` as described (flat) and drawn in every one of `styles`."""
    return all(content_split(scene, style) == split for style in {"flat", *styles})


def draw_in_split(draw: Callable[[], Scene], split: str, styles: Iterable[str] = ()) -> Scene:
    """Calls `draw` until it gives a scene of `split` in all `styles` (a seeded `draw` keeps the result pure)."""
    while True:
        scene = draw()
        if in_split(scene, split, styles):
            return scene


class World:
    """A seeded source of scenes of one content split: `scene(index)` depends on (seed, split, index) only."""

    def __init__(self, seed: int | str = 0, split: Split = "train") -> None:
        self.seed, self.split = seed, check_split(split)

    def scene(self, index: int, styles: tuple[str, ...] = ()) -> Scene:
        """Scene `index` of the split, as described and as it will be drawn in `styles` (all of the split)."""
        # The "world:" prefix keeps this stream apart from Task.rng(seed, index), which tasks use for their own picks.
        rng = random.Random(f"world:{self.seed}:{index}")
        return draw_in_split(lambda: random_scene(rng), self.split, styles)


class DrawsFromWorld:
    """Mixin for task plugins whose built-in examples come from the world: `world` is the world of the task's `seed`
    and content `split` ("train" unless the task is an evaluation set).

    A `World` holds nothing but its seed and split, so it is made on use instead of being stored by every plugin.
    """

    seed: int
    split: str = "train"

    @property
    def world(self) -> World:
        return World(self.seed, self.split)


def subject(name: str) -> Subject:
    _check("subject", name, SUBJECTS)
    return SUBJECTS[name]


def subject_scene(name: str, position: str, size: str, background: str) -> Scene:
    """The subject `name`, alone, placed as asked."""
    identity = subject(name)
    return Scene(background, (SceneObject(identity.shape, identity.colour, identity.pattern, position, size),))


@cache
def subject_placements(name: str, split: Split, style: str = "flat") -> tuple[tuple[str, str, str], ...]:
    """The placements (position, size, background) of subject `name` whose scene, described and drawn in `style`,
    belongs to `split` (may be empty for a style: about 1 in EVAL_SHARE² placements are eval in two ways)."""
    check_split(split)
    return tuple(p for p in PLACEMENTS if in_split(subject_scene(name, *p), split, (style,)))


def caption(scene: Scene) -> str:
    """E.g. "a large red striped circle on the left, on a sky background"."""
    objects = " and ".join(
        f"a {obj.size} {obj.colour} {obj.pattern} {obj.shape} {POSITION_PHRASES[obj.position]}" for obj in scene.objects
    )
    return f"{objects}, on a {scene.background} background"


def render(scene: Scene, size: int = 32, style: str = "flat") -> Image.Image:
    """Draws `scene` as a size x size RGB image in `style` (one of `STYLES`)."""
    _check("style", style, STYLES)
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    side = size * SUPERSAMPLE
    # A box filter at an integer factor is an exact area average: antialiased edges with no ringing.
    return _STYLE_RENDERERS[style](scene, side).resize((size, size), Image.Resampling.BOX)


def _shape_mask(obj: SceneObject, side: int, line: int = 0) -> Image.Image:
    """The object's silhouette, or with `line` > 0 just its outline, drawn `line` pixels wide inside the edge."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    ink = {"outline": 255, "width": line} if line else {"fill": 255}
    fx, fy = POSITIONS[obj.position]
    x, y, r = fx * side, fy * side, SIZES[obj.size] * side
    if obj.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), **ink)
    elif obj.shape == "face":  # an upright oval, so a face's silhouette differs from a circle's
        draw.ellipse((x - 0.8 * r, y - r, x + 0.8 * r, y + r), **ink)
    elif obj.shape == "square":
        half = 0.85 * r  # a touch smaller, so a square looks as big as a circle of the same size word
        draw.rectangle((x - half, y - half, x + half, y + half), **ink)
    elif obj.shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + 0.75 * r), (x - r, y + 0.75 * r)], **ink)
    else:  # cross: a plus sign with arms 2 * arm wide
        arm = 0.33 * r
        corners = [(arm, r), (arm, arm), (r, arm), (r, -arm), (arm, -arm), (arm, -r)]
        corners += [(-dx, -dy) for dx, dy in corners]
        draw.polygon([(x + dx, y + dy) for dx, dy in corners], **ink)
    return mask


def _face_features(obj: SceneObject, side: int) -> Image.Image | None:
    """Eyes and a smiling mouth for a face, as a mask; None for every other shape."""
    if obj.shape != "face":
        return None
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    fx, fy = POSITIONS[obj.position]
    x, y, r = fx * side, fy * side, SIZES[obj.size] * side
    eye = 0.16 * r
    for dx in (-0.35 * r, 0.35 * r):
        draw.ellipse((x + dx - eye, y - 0.3 * r - eye, x + dx + eye, y - 0.3 * r + eye), fill=255)
    draw.arc((x - 0.4 * r, y, x + 0.4 * r, y + 0.55 * r), 20, 160, fill=255, width=max(1, round(0.12 * r)))
    return mask


def _texture(colour: str, pattern: str, side: int) -> Image.Image:
    """A full canvas of the colour with its pattern; marks are a pale tint of the colour, so the colour still reads."""
    base = np.array(COLOURS[colour], dtype=np.float32)
    tint = 0.35 * base + 0.65 * 255
    period = side // 8  # pattern scales with the image, so it looks the same at every size
    yy, xx = np.mgrid[0:side, 0:side]
    if pattern == "striped":
        marks = ((xx + yy) // (period // 2)) % 2 == 1
    elif pattern == "dotted":
        marks = (xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2 <= (0.3 * period) ** 2
    elif pattern == "checkered":
        marks = (xx // (period // 2) + yy // (period // 2)) % 2 == 1
    else:
        marks = np.zeros((side, side), dtype=bool)
    return Image.fromarray(np.where(marks[..., None], tint, base).astype(np.uint8), "RGB")


def _flat(scene: Scene, side: int) -> Image.Image:
    canvas = Image.new("RGB", (side, side), BACKGROUNDS[scene.background])
    for obj in scene.objects:
        canvas.paste(_texture(obj.colour, obj.pattern, side), mask=_shape_mask(obj, side))
        # A rim in the plain colour keeps the silhouette readable where pale pattern marks reach the edge.
        canvas.paste(COLOURS[obj.colour], mask=_shape_mask(obj, side, line=side // 48))
        features = _face_features(obj, side)
        if features is not None:
            canvas.paste((35, 25, 25), mask=features)
    return canvas


def _line_art(scene: Scene, side: int, paper: Colour) -> Image.Image:
    """Each object as a line in its colour on plain paper; fill pattern and background are dropped."""
    width = side // 32  # a fixed share of the image, so lines look alike at every size (1 px at 32 px)
    canvas = Image.new("RGB", (side, side), paper)
    for obj in scene.objects:
        canvas.paste(COLOURS[obj.colour], mask=_shape_mask(obj, side, line=width))
        features = _face_features(obj, side)
        if features is not None:
            canvas.paste(COLOURS[obj.colour], mask=features)
    return canvas


def _outline(scene: Scene, side: int) -> Image.Image:
    return _line_art(scene, side, paper=(250, 250, 250))


def _neon(scene: Scene, side: int) -> Image.Image:
    lines = _line_art(scene, side, paper=(8, 8, 20))
    return ImageChops.add(lines, lines.filter(ImageFilter.GaussianBlur(side / 24)), scale=0.6)


def _pastel(scene: Scene, side: int) -> Image.Image:
    flat = _flat(scene, side)
    return Image.blend(flat, Image.new("RGB", flat.size, (255, 255, 255)), 0.5)


def _sepia(scene: Scene, side: int) -> Image.Image:
    # Stretching the grey levels first keeps, e.g., a yellow object visible on a cream background.
    gray = ImageOps.autocontrast(_flat(scene, side).convert("L"))
    return ImageOps.colorize(gray, black=(60, 35, 10), white=(240, 220, 170))


def _mosaic(scene: Scene, side: int) -> Image.Image:
    tiles = 8
    blocks = _flat(scene, side).resize((tiles, tiles), Image.Resampling.BOX)
    canvas = blocks.resize((side, side), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    grout = SUPERSAMPLE // 2  # dark grout between tiles, half an output pixel wide
    for k in range(1, tiles + 1):  # along each tile's right and bottom edge, so every tile looks the same
        edge = round(k * side / tiles)
        draw.rectangle((edge - grout, 0, edge - 1, side), fill=(60, 60, 60))
        draw.rectangle((0, edge - grout, side, edge - 1), fill=(60, 60, 60))
    return canvas


_STYLE_RENDERERS: dict[str, Callable[[Scene, int], Image.Image]] = {
    "flat": _flat,
    "outline": _outline,
    "pastel": _pastel,
    "neon": _neon,
    "mosaic": _mosaic,
    "sepia": _sepia,
}


@dataclass(frozen=True)
class _Backdrop:
    """A scene with no objects: only the renderers see it (a `Scene` always has an object)."""

    background: str
    objects: tuple = ()


def render_background(background: str, size: int = 32, style: str = "flat") -> Image.Image:
    """The background alone, drawn in `style`: what a scene looks like with its objects removed."""
    _check("background", background, BACKGROUNDS)
    _check("style", style, STYLES)
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    return _STYLE_RENDERERS[style](_Backdrop(background), size * SUPERSAMPLE).resize((size, size), Image.Resampling.BOX)


def object_depth(obj: SceneObject) -> int:
    """An object's brightness in the depth map (0-255, nearer = brighter): large and low objects are nearer."""
    return {"small": 180, "large": 225}[obj.size] + {"top": -20, "bottom": 20}.get(obj.position, 0) // 2


def depth_map(scene: Scene, size: int = 32) -> Image.Image:
    """A grayscale depth map: a background receding upwards (darker at the top) and flat-depth objects."""
    side = size * SUPERSAMPLE
    ramp = np.linspace(40, 120, side, dtype=np.float32)[:, None].repeat(side, axis=1)  # the floor nears downwards
    canvas = Image.fromarray(ramp.astype(np.uint8), "L")
    for obj in sorted(scene.objects, key=object_depth):  # far to near, so nearer objects are drawn on top
        canvas.paste(object_depth(obj), mask=_shape_mask(obj, side))
    return canvas.resize((size, size), Image.Resampling.BOX)


def silhouettes(objects: Iterable[SceneObject], size: int = 32, touched: bool = False) -> Image.Image:
    """The objects' silhouettes as a binary L image (255 inside). A pixel is inside when most of it is covered, or
    with `touched` when any of it is."""
    side = size * SUPERSAMPLE
    canvas = Image.new("L", (side, side), 0)
    for obj in objects:
        canvas.paste(255, mask=_shape_mask(obj, side))
    coverage = np.asarray(canvas.resize((size, size), Image.Resampling.BOX))
    return Image.fromarray(np.where(coverage > 0 if touched else coverage >= 128, 255, 0).astype(np.uint8), "L")


def object_mask(scene: Scene, size: int = 32) -> Image.Image:
    """The scene's object silhouettes (the mask control)."""
    return silhouettes(scene.objects, size)


def sketch(scene: Scene, size: int, rng: random.Random) -> Image.Image:
    """Thin dark outlines on white, each drawn twice with a small random offset, as a quick hand sketch."""
    side = size * SUPERSAMPLE
    canvas = Image.new("RGB", (side, side), (250, 250, 250))
    for obj in scene.objects:
        outline = _shape_mask(obj, side, line=max(1, side // 40))
        for _ in range(2):
            dx, dy = rng.randint(-SUPERSAMPLE, SUPERSAMPLE), rng.randint(-SUPERSAMPLE, SUPERSAMPLE)
            canvas.paste((30, 30, 30), mask=ImageChops.offset(outline, dx, dy))
    return canvas.resize((size, size), Image.Resampling.BOX)
