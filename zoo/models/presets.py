"""Named backbone presets: small functions that return a diffusers `UNet2DConditionModel` config.

`--model.unet` takes a preset name, a full config dict, or a local diffusers folder (its `config.json`, or the
`unet/config.json` of a pipeline folder), the way `UNet2DConditionModel.from_config` reads one. `python -m zoo list
models` prints every preset with its resolution and parameter count, counted on the `meta` device (no weights are
allocated, so the 4B-parameter presets list in a second).

The paper's base model (arXiv 2401.01952 Table 5, App. A.2.1) in diffusers terms (`paper_base128`):
- "multiple DBlock/UBlock for each resolution, numResNetBlocksPerBlock=1": 8 DBlocks of one ResNet (plus attention
  where the resolution has it) are one diffusers down block with `layers_per_block=8` — diffusers' `resnets[i]` /
  `attentions[i]` pairs are exactly those single-ResNet blocks.
- Imagen's DBlock downsamples *first* (DBlock-1 is "128→64" and its 8 ResNets run at 64×64), diffusers' down blocks
  downsample *last*. So the diffusers levels are 128 (the stem only: `layers_per_block` 0), 64 (512 ch), 32 (1024 ch)
  and 16 (2048 ch, attention): the ResNets and attention sit at the resolutions Table 5 gives.
- Attention is Imagen's self-attention with the text tokens as extra keys/values (IF's `SimpleCrossAttn*` blocks,
  no feed-forward), a pooled text embedding is added to the timestep embedding (`addition_embed_type="text"`), and
  T5-XXL's 4096-d tokens are projected to 2048 (`encoder_hid_dim`).
- Parameter count: 3.03B before the context layers, against the paper's 2.51B. The difference sits in the 16×16 up
  block (1.39B): a diffusers up block has `layers_per_block + 1` ResNets, each reading the 2048-channel skip
  concatenated to its 2048-channel input; Table 5 is silent on skips and lists the UBlock widths one level down.
  The context layers add 0.30B (paper: 0.25B): one per text attention of the 16×16 stage, 18 of them (8 down,
  1 mid, 9 up) at 2048 wide.

DeepFloyd IF (`if_stage1_m/l/xl`, `if_stage2`) follows the block layout that diffusers' own converter writes
(huggingface/diffusers `scripts/convert_if.py`: `create_unet_diffusers_config` and `get_super_res_unet`):
ResnetDownsample / SimpleCrossAttn blocks, attention at 32/16/8 px, GELU, scale-shift norm, group-norm cross
attention, `addition_embed_type="text"`, T5-XXL (4096) projected by `encoder_hid_proj`; stage II adds the
noise-augmentation `class_embed_type="timestep"`, per-level `layers_per_block` and its residual scales. The widths
(`block_out_channels`, `cross_attention_dim`, stage II's levels) are *fitted to the published parameter counts*
(IF-I-M 400M, IF-I-L 900M, IF-I-XL 4.3B, IF-II-L 1.2B; the model cards), because the hub's `config.json` files were
not available offline. The weights' own folder is therefore the source of truth: `--model.unet if_stage1_xl
--model.init_from PATH` (any IF preset) builds the backbone from PATH's `config.json`, as does `--model.unet PATH`;
`--model.init_from PATH` with any other preset compares the two configs and names every differing field before
anything loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fields of a diffusers config.json that describe bookkeeping, not the architecture.
BOOKKEEPING_FIELDS = {"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values"}


def tiny() -> dict[str, Any]:
    """For tests, 0.25M parameters, text width 32 (pairs with `builtin:tiny-t5`)."""
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
    """The CPU main job (`make demo`), three resolutions, attention at 8×8, text width 128 (`builtin:small-t5`)."""
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
        # diffusers' `CrossAttn*Block2D` read `attention_head_dim` as the number of heads (a known misnomer): 4 heads
        # of 32 channels at the 128-wide 8×8 stage. (32 would mean 32 heads of 4, which CPU attention runs 3-4×
        # slower for the same FLOPs.)
        attention_head_dim=4,
        norm_num_groups=16,
    )


def demo_pooled() -> dict[str, Any]:
    """`demo` plus Imagen's pooled text embedding added to the timestep embedding (`addition_embed_type="text"`).

    Imagen (arXiv 2205.11487 §2.4) and DeepFloyd IF pool the text tokens into one vector added to the timestep
    embedding, so every ResNet block sees the text, not only the 8×8 cross-attention; issue #11 measured it moving a
    text-only demo run's background pass rate from 0.12 to 0.25. diffusers' `TextTimeEmbedding`: attention pooling
    with 4 heads of 32 channels, as the 8×8 cross-attention's. A preset of its own, so `demo` checkpoints keep loading.
    """
    return dict(demo(), addition_embed_type="text", addition_embed_type_num_heads=4)


def demo_minilm() -> dict[str, Any]:
    """`demo_pooled` reading a pretrained 384-d text encoder (`builtin:minilm`), projected to 128 (`encoder_hid_dim`).

    For captions in real English, whose words the built-in world's vocabulary lacks. On the built-in world it learned
    less than `demo_pooled` with the word-level T5 at equal steps (docs/learning.md, lever 15)."""
    return dict(demo_pooled(), encoder_hid_dim=384, encoder_hid_dim_type="text_proj")


def paper_base128() -> dict[str, Any]:
    """The paper's base (Table 5), 512/1024/2048 channels, 8 single-ResNet blocks per resolution, attention at 16×16.

    T5-XXL text. See the module docstring for the mapping to diffusers and the parameter count."""
    return dict(
        sample_size=128,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 512, 1024, 2048),  # 128 px: stem only; then Table 5's DBlock-1/2/3 widths
        layers_per_block=(0, 8, 8, 8),  # 8 DBlocks × numResNetBlocksPerBlock=1 per resolution
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        attention_head_dim=64,
        cross_attention_dim=2048,
        encoder_hid_dim=4096,  # T5-XXL (§2.1)
        addition_embed_type="text",  # Imagen: pooled text embedding added to the timestep embedding
        addition_embed_type_num_heads=64,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
    )


def _if_stage1(width: int) -> dict[str, Any]:
    """IF stage I (64 px) with base width `width`: channel_mult (1, 2, 3, 4), 3 ResNets per level."""
    return dict(
        sample_size=64,
        in_channels=3,
        out_channels=6,  # ε and the learned-range variance
        block_out_channels=(width, 2 * width, 3 * width, 4 * width),
        layers_per_block=3,
        down_block_types=(
            "ResnetDownsampleBlock2D",
            "SimpleCrossAttnDownBlock2D",
            "SimpleCrossAttnDownBlock2D",
            "SimpleCrossAttnDownBlock2D",
        ),
        up_block_types=(
            "SimpleCrossAttnUpBlock2D",
            "SimpleCrossAttnUpBlock2D",
            "SimpleCrossAttnUpBlock2D",
            "ResnetUpsampleBlock2D",
        ),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        attention_head_dim=64,
        cross_attention_dim=4 * width,
        encoder_hid_dim=4096,
        encoder_hid_dim_type="text_proj",
        addition_embed_type="text",
        addition_embed_type_num_heads=64,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        upcast_attention=False,
    )


def if_stage1_m() -> dict[str, Any]:
    """DeepFloyd IF-I-M layout (card: 400M), fitted widths; init_from a folder uses its config.json."""
    return _if_stage1(192)


def if_stage1_l() -> dict[str, Any]:
    """DeepFloyd IF-I-L layout (card: 900M), fitted widths; init_from a folder uses its config.json."""
    return _if_stage1(320)


def if_stage1_xl() -> dict[str, Any]:
    """DeepFloyd IF-I-XL layout (card: 4.3B), fitted widths; init_from a folder uses its config.json."""
    return _if_stage1(704)


def if_stage2() -> dict[str, Any]:
    """DeepFloyd IF stage II layout, 64 → 256 px super-resolution (IF-II-L card: 1.2B), widths fitted to the card.

    The input is the
    noisy image and the upsampled low-resolution image (6 channels); the noise-augmentation level enters as
    `class_labels` (`class_embed_type="timestep"`). See the module docstring."""
    channels = (160, 320, 640, 960, 1280)
    return dict(
        sample_size=256,
        in_channels=6,
        out_channels=6,
        block_out_channels=channels,
        layers_per_block=(2, 2, 3, 4, 4),
        down_block_types=("ResnetDownsampleBlock2D",) * 3 + ("SimpleCrossAttnDownBlock2D",) * 2,
        up_block_types=("SimpleCrossAttnUpBlock2D",) * 2 + ("ResnetUpsampleBlock2D",) * 3,
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        attention_head_dim=64,
        cross_attention_dim=4096,
        encoder_hid_dim=4096,
        encoder_hid_dim_type="text_proj",
        class_embed_type="timestep",
        addition_embed_type="text",
        addition_embed_type_num_heads=64,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        time_embedding_dim=channels[-1],
        time_embedding_act_fn="gelu",
        resnet_skip_time_act=True,
        resnet_out_scale_factor=1 / 0.7071,
        mid_block_scale_factor=1 / 0.7071,
        only_cross_attention=True,
        upcast_attention=False,
    )


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {
    "tiny": tiny,
    "demo": demo,
    "demo_pooled": demo_pooled,
    "demo_minilm": demo_minilm,
    "paper_base128": paper_base128,
    "if_stage1_m": if_stage1_m,
    "if_stage1_l": if_stage1_l,
    "if_stage1_xl": if_stage1_xl,
    "if_stage2": if_stage2,
}

# Layouts whose widths are fitted to published parameter counts (module docstring): the real weights' folder wins.
FITTED_PRESETS = frozenset({"if_stage1_m", "if_stage1_l", "if_stage1_xl", "if_stage2"})


def diffusers_config_file(path: str | Path) -> Path | None:
    """The UNet `config.json` of a diffusers folder: `PATH/config.json`, `PATH/unet/config.json` for a diffusers
    pipeline, or `PATH/base/unet/config.json` for a zoo pipeline (`python -m zoo export`; its base stage)."""
    path = Path(path)
    for candidate in (path / "config.json", path / "unet" / "config.json", path / "base" / "unet" / "config.json"):
        if candidate.is_file():
            return candidate
    return None


def read_diffusers_config(path: str | Path) -> dict[str, Any]:
    """The architecture fields of a diffusers UNet folder's `config.json` (bookkeeping fields dropped)."""
    file = diffusers_config_file(path)
    if file is None:
        raise ValueError(
            f"{path}: no config.json (nor unet/config.json) here; give a diffusers UNet or pipeline folder"
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from error
    if config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise ValueError(f"{file}: describes a {config['_class_name']}, not a UNet2DConditionModel")
    return {k: v for k, v in config.items() if k not in BOOKKEEPING_FIELDS}


def takes_weights_config(unet: str | dict[str, Any], init_from: str | None) -> bool:
    """Whether `unet` is an IF preset that takes its architecture from `init_from`, a diffusers folder."""
    if not isinstance(unet, str) or unet not in FITTED_PRESETS or init_from is None:
        return False
    return diffusers_config_file(init_from) is not None


def resolve_unet_config(unet: str | dict[str, Any], init_from: str | None = None) -> dict[str, Any]:
    """A preset name, a config dict or a diffusers folder → a config dict (a copy; the caller's dict is never changed).

    An IF preset (`FITTED_PRESETS`: widths fitted, not read from the hub) defers to the weights it starts from: when
    `init_from` is a diffusers folder, that folder's `config.json` is the architecture.
    """
    if takes_weights_config(unet, init_from):
        return read_diffusers_config(init_from)
    if isinstance(unet, str):
        if unet in PRESETS:
            return PRESETS[unet]()
        if Path(unet).is_dir():
            return read_diffusers_config(unet)
        raise ValueError(
            f"unknown UNet preset {unet!r}; known presets: {sorted(PRESETS)} "
            "(or pass a config dict or a local diffusers "
            "folder with config.json)"
        )
    if isinstance(unet, dict):
        return dict(unet)
    raise TypeError(f"unet must be a preset name, a config dict or a diffusers folder, got {type(unet).__name__}")


def count_parameters(config: dict[str, Any]) -> int:
    """Parameters of the UNet a config describes, built on the `meta` device (nothing is allocated)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    return sum(p.numel() for p in unet.parameters())


@dataclass(frozen=True)
class PresetInfo:
    """One line of `python -m zoo list models`."""

    name: str
    resolution: int
    parameters: int
    summary: str


def describe_presets() -> list[PresetInfo]:
    """Every preset with its resolution, parameter count (backbone only, before context layers) and docstring."""
    infos = []
    for name, preset in PRESETS.items():
        config = preset()
        summary = " ".join((preset.__doc__ or "").split()).split(". ")[0]
        infos.append(PresetInfo(name, config["sample_size"], count_parameters(config), summary))
    return infos
