"""Named backbone presets: small functions that return a diffusers `UNet2DConditionModel` config.

Attention sits only at the lowest resolution, as in the paper's base model (arXiv 2401.01952 Table 5: attention
only at 16×16); that stage is also where the new context cross-attention goes (see `zoo.models.instruct_unet`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def tiny() -> dict[str, Any]:
    """For tests: ~0.1M parameters, 32 px, text width 32 (pairs with `builtin:tiny-t5`)."""
    return dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def demo() -> dict[str, Any]:
    """The CPU main job (`make demo`): 32 px, three resolutions, attention at 8×8, text width 128 (`builtin:small-t5`)."""
    return dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=128,
        attention_head_dim=32,
        norm_num_groups=16,
    )


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {"tiny": tiny, "demo": demo}


def resolve_unet_config(unet: str | dict[str, Any]) -> dict[str, Any]:
    """A preset name or a full config dict → a config dict (a copy; the caller's dict is never changed)."""
    if isinstance(unet, str):
        if unet not in PRESETS:
            raise ValueError(f"unknown UNet preset {unet!r}; known presets: {sorted(PRESETS)} (or pass a config dict)")
        return PRESETS[unet]()
    if isinstance(unet, dict):
        return dict(unet)
    raise TypeError(f"unet must be a preset name or a config dict, got {type(unet).__name__}")
