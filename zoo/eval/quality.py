"""The perceptual-quality proxy (PQ) used where no human rates the images.

ImagenHub's PQ asks "does it look genuine, without artefacts?". On a built-in world the genuine images are known: the
renders. So PQ_i measures how close generation i comes to the suite's real images (the targets of every set),
calibrated between two anchors:

    s_i   = max over real images r (other than i's own target and its exact copies) of cos(f(generated_i), f(r))
    s_real  = median over real images of the same nearest-neighbour similarity to the other real images (copies out)
    s_noise = median over uniform-noise images (fixed seed) of their nearest-neighbour similarity to the real images
    PQ_i  = clip((s_i - s_noise) / (s_real - s_noise), 0, 1)

1 means "as close to a genuine render as genuine renders are to each other", 0 "no closer than noise". Excluding the
example's own target keeps PQ about realism, not about following the instruction (that is SC); every pixel-equal copy
of it in the pool goes too, or a copy of the target would still find itself (sets may share a render). f is the
report's first feature extractor. The result is continuous in [0, 1], not quantised to ImagenHub's {0, 0.5, 1}.
"""

from __future__ import annotations

import torch

from zoo.eval.features import FeatureExtractor

NOISE_SEED = 1234
METHOD = (
    "no-reference realism proxy, not a human score: PQ_i = clip((s_i - s_noise) / (s_real - s_noise), 0, 1), where "
    "s_i is the highest cosine similarity of generation i to the suite's real images (every set's targets) other than "
    "its own target and every pixel-equal copy of it, "
    "s_real the median of that nearest-neighbour similarity among the real images, and s_noise the same for "
    "uniform-noise images (seed 1234); 1 = as close to a genuine image as genuine images are to each other, "
    "0 = no closer than noise; continuous, not quantised to {0, 0.5, 1}"
)


class RealismPQ:
    """PQ calibrated on `real` images (N, 3, H, W) in [-1, 1], N ≥ 2; `own[i]` is generation i's target index."""

    def __init__(self, extractor: FeatureExtractor, real: torch.Tensor) -> None:
        if len(real) < 2:
            raise ValueError(f"the PQ proxy needs at least 2 real images to calibrate, got {len(real)}")
        self.extractor = extractor
        copies: dict[bytes, list[int]] = {}
        for index, image in enumerate(real):
            copies.setdefault(image.detach().cpu().contiguous().numpy().tobytes(), []).append(index)
        self.copies = {index: group for group in copies.values() for index in group}  # index → every pixel-equal one
        self.real = extractor.encode_image(real)
        similarity = self.real @ self.real.T
        for index, group in self.copies.items():
            similarity[index, group] = -float("inf")  # itself and its copies
        self.s_real = similarity.max(1).values.median().item()
        noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(NOISE_SEED)) * 2 - 1
        self.s_noise = (extractor.encode_image(noise) @ self.real.T).max(1).values.median().item()

    def __call__(self, images: torch.Tensor, own: list[int | None]) -> list[float]:
        if self.s_real <= self.s_noise:
            return [float("nan")] * len(images)  # real images are no closer to each other than noise: no scale
        similarity = self.extractor.encode_image(images) @ self.real.T
        for row, index in enumerate(own):
            if index is not None:
                similarity[row, self.copies[index]] = -float("inf")
        nearest = similarity.max(1).values
        return ((nearest - self.s_noise) / (self.s_real - self.s_noise)).clamp(0, 1).tolist()
