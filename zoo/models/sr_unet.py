"""The super-resolution UNet: the noisy high-resolution image and the upsampled low-resolution image, side by side.

A text-conditioned `UNet2DConditionModel` whose input is the noisy image x_t concatenated on channels with the
low-resolution image upsampled to the output size (guided-diffusion's `SuperResModel`; DeepFloyd IF stage II, whose
UNet has `in_channels=6`). Imagen's *noise conditioning augmentation* (arXiv 2205.11487 §2.5) corrupts that
low-resolution image with the forward process at an augmentation level and tells the network the level; as in IF-II
(`IFSuperResolutionPipeline`), the level is a timestep of the noise schedule given as `class_labels` to a
`class_embed_type="timestep"` embedding that is added to the time embedding. The diffusion math (which level, how
to noise) stays in the Lightning module; this file owns the network and its input layout.

Beyond the paper (whose SR model reads text only, Table 5), the UNet can also read the multimodal context through
`InstructUNet`'s context layers (`read_context=True`); a context image is encoded clean (level 0) as its own
low-resolution guide, so the 6-channel input layer takes it unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import nn

from zoo.models.instruct_unet import ContextTokens, InstructUNet
from zoo.models.presets import resolve_unet_config

IMAGE_CHANNELS = 3


def sr_unet_config(unet: str | dict[str, Any], image_size: int, init_from: str | None = None) -> dict[str, Any]:
    """A backbone preset or config → its super-resolution form: 2 × 3 input channels, a timestep class embedding.

    A config that already has that form (e.g. DeepFloyd IF-II's) is kept as it is, apart from `sample_size`.
    `init_from` as for `zoo.models.presets.resolve_unet_config` (an IF preset takes the weights' folder config).
    """
    config = resolve_unet_config(unet, init_from)
    if config.get("in_channels", IMAGE_CHANNELS) == IMAGE_CHANNELS:
        config["in_channels"] = 2 * IMAGE_CHANNELS
    if config["in_channels"] != 2 * IMAGE_CHANNELS:
        raise ValueError(
            f"a super-resolution UNet takes {2 * IMAGE_CHANNELS} input channels (noisy image + upsampled low-res "
            f"image); the config has in_channels={config['in_channels']}"
        )
    if config.setdefault("class_embed_type", "timestep") != "timestep":
        raise ValueError(
            f"the noise-augmentation level reaches the SR UNet as a timestep class embedding; the config has "
            f"class_embed_type={config['class_embed_type']!r} (use 'timestep')"
        )
    config["sample_size"] = image_size
    return config


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) → (B, 3, size, size), antialiased: how training makes the low-resolution input."""
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, h, w) → (B, 3, size, size), bilinear with aligned corners, as `IFSuperResolutionPipeline` does."""
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=True)


class SuperResUNet(nn.Module):
    """The SR denoiser.

    Args:
        unet: a `UNet2DConditionModel` in SR form (see `sr_unet_config`), taken as is.
        read_context: add `InstructUNet`'s context cross-attention (off in the paper).
    """

    def __init__(self, unet: UNet2DConditionModel, read_context: bool = False) -> None:
        super().__init__()
        if unet.config.in_channels != 2 * IMAGE_CHANNELS or unet.config.class_embed_type != "timestep":
            raise ValueError(
                "SuperResUNet needs in_channels=6 and class_embed_type='timestep' (build the config with "
                f"sr_unet_config); got in_channels={unet.config.in_channels}, "
                f"class_embed_type={unet.config.class_embed_type!r}"
            )
        self.read_context = read_context
        # One registration of the backbone only: either inside InstructUNet or on its own.
        self.net: InstructUNet | UNet2DConditionModel = InstructUNet(unet) if read_context else unet

    @property
    def unet(self) -> UNet2DConditionModel:
        return self.net.unet if self.read_context else self.net

    @property
    def config(self):
        return self.unet.config

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward: diffusers' checkpointing, or `InstructUNet`'s with the context."""
        self.net.enable_gradient_checkpointing()

    def encode_context(
        self, images: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, item_mask: torch.Tensor
    ) -> ContextTokens:
        """Context tokens, as `InstructUNet.encode_context`; images (B, K, 3, H, W) at the SR resolution."""
        if not self.read_context:
            raise ValueError("this SR UNet was built with read_context=False; it has no context layers")
        # A clean context image is its own low-resolution guide: (image, image) on the 6 input channels.
        return self.net.encode_context(torch.cat([images, images], dim=2), text, text_mask, item_mask)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        lowres: torch.Tensor,
        noise_level: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        context: ContextTokens | None = None,
    ) -> torch.Tensor:
        """(x_t, t, upsampled noise-augmented low-res image, its level, text, context) → v.

        Args:
            sample: (B, 3, H, W) noisy high-resolution images; timestep (B,).
            lowres: (B, 3, H, W) the low-resolution image upsampled to H × W, already noise-augmented.
            noise_level: (B,) the augmentation timestep of `lowres`.
            text: (B, L, D) embeddings; text_mask (B, L) bool.
            context: encoded context (only with read_context=True), or None.
        """
        x = torch.cat([sample, lowres], dim=1)  # (B, 6, H, W)
        if self.read_context:
            return self.net(x, timestep, text, text_mask, context, class_labels=noise_level)
        if context is not None:
            raise ValueError("this SR UNet was built with read_context=False but was given a context")
        return self.net(
            x, timestep, encoder_hidden_states=text, encoder_attention_mask=text_mask, class_labels=noise_level
        ).sample
