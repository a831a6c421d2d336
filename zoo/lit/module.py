"""InstructImagen: the Lightning module for the cascade's base stage, trained on instructions.

A `Stage` (`zoo.lit.stage`: text encoder, context encoding, loss, checkpoints, LoRA, optimizer, guided sampling)
whose network is the `InstructUNet`: the backbone plus the context layers that read the multimodal context (paper
§2.3). Configuration arrives as plain typed arguments from YAML through LightningCLI, so a checkpoint's
hyperparameters rebuild the module exactly (`load_from_checkpoint`).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any, Literal

import torch
from diffusers import SchedulerMixin
from lightning.pytorch.utilities import rank_zero_info

from zoo.diffusion.sampler import Guidance
from zoo.instruction import Instruction, InstructionBatch
from zoo.lit.optimizer import OptimizerSpec
from zoo.lit.stage import Stage
from zoo.lora import LoraSpec
from zoo.models.instruct_unet import InstructUNet
from zoo.models.presets import resolve_unet_config, takes_weights_config
from zoo.models.text import TextEncoder


class InstructImagen(Stage):
    """The instruction-following base model.

    Args:
        unet: a preset name (`python -m zoo list models`), a full `UNet2DConditionModel` config dict, or a local
            diffusers UNet/pipeline folder whose `config.json` defines the backbone.
        text_encoder: frozen; `builtin:tiny-t5`, `builtin:small-t5` (byte-level), `builtin:tiny-t5-words`,
            `builtin:small-t5-words` (word-level, `zoo.models.words`), a local transformers folder or hub id, or a
            `zoo.models.text.TextEncoder` (in YAML by class_path). Its width must equal the UNet's `encoder_hid_dim`,
            or `cross_attention_dim` when there is none.
        text_max_length: tokens per text (payload and context texts alike); default 64. An encoder given by
            class_path brings its own `max_length`: leave this unset.
        image_size: training/sampling resolution in pixels (linked from `data.image_size` by the CLI).
        learning_rate: peak learning rate (paper: 1e-4, App. A.2.2).
        warmup_steps: linear warm-up steps (paper: 10k).
        optimizer: `adamw` (β 0.9/0.999) or `adafactor` (the paper's; torch's, without momentum, unless
            `adafactor_beta1` or `adafactor_beta2_cap` is set).
        weight_decay: decoupled weight decay.
        drop_text_and_context: chance of dropping text and context together (paper: 0.1).
        drop_context: chance of dropping only the context (paper: 0.1).
        num_train_timesteps: diffusion steps of the training schedule.
        sample_steps: sampling steps used by `generate` when not told otherwise (paper: 256).
        guidance_scale: classifier-free guidance scale used by `generate` by default.
        context_grad: `end_to_end` (paper §2.3) or `no_grad`: whether the loss reaches the shared down stack
            through the context pass as well as through the denoising pass.
        context_positions: the context layers see each token's grid position (a fixed sine-cosine code; not in the
            paper; `zoo.models.instruct_unet`). Adds no weights.
        context_norm: layer-normalise the context tokens in each context layer (not in the paper).
        context_pooled: add the pooled context to the timestep embedding too (not in the paper).
        text_refiner: trainable transformer layers over the frozen text tokens before the UNet reads them
            (`zoo.models.text_refiner`; not in the paper, whose T5-XXL is pretrained); 0: none.
        context_lr_scale: the context layers' learning rate as a multiple of `learning_rate` (they start at zero,
            the backbone pretrained; not in the paper; docs/learning.md, lever 12).
        snr_gamma: min-SNR-γ weighting of the training loss (Hang et al. 2023; diffusers' `--snr_gamma`); None: the
            paper's plain L2.
        text_cache: root of a text-embedding cache (`python -m zoo cache-text`); cached texts skip the encoder.
        init_from: weights (only) that start this run: a Lightning checkpoint, a diffusers UNet or pipeline folder
            (e.g. DeepFloyd `IF-I-XL-v1.0/unet`, safetensors only) or a `.safetensors` file. The new context layers
            are the only keys that may be missing; anything else is an error naming the keys.
        lora: train LoRA adapters (see `zoo.lora.LoraSpec`) instead of the whole network; applied after `init_from`.
        nonfinite_patience: a NaN/inf loss skips its step; this many in a row stop training (the last good
            checkpoint is kept).
        adafactor_beta1: Adafactor's first-moment decay (paper A.2.2: 0.9). Set, it selects transformers'
            Adafactor (torch's has no β1) with a fixed learning rate.
        adafactor_beta2_cap: caps Adafactor's second-moment decay 1 − t^−0.8 (paper A.2.2: 0.999, read as
            big_vision's `beta2_cap`; `zoo.lit.adafactor`). Unset, β2 keeps rising (0.999 at step ~5.6k, then beyond).
        gradient_checkpointing: recompute activations in backward instead of keeping them (diffusers' checkpointing
            over the backbone, the context pass and the context layers): less memory for ~30% more compute.
        compile: `torch.compile` the backbone UNet (with its context hooks) at fit start or on first use; a one-line
            error where the backend cannot compile (`zoo.lit.stage.compile_backbone`).
    """

    def __init__(
        self,
        unet: str | dict[str, Any] = "tiny",
        text_encoder: str | TextEncoder = "builtin:tiny-t5",
        text_max_length: int | None = None,
        image_size: int = 32,
        learning_rate: float = 1e-4,
        warmup_steps: int = 0,
        optimizer: Literal["adamw", "adafactor"] = "adamw",
        weight_decay: float = 0.0,
        drop_text_and_context: float = 0.1,
        drop_context: float = 0.1,
        num_train_timesteps: int = 1000,
        sample_steps: int = 50,
        guidance_scale: float = 3.0,
        context_grad: Literal["end_to_end", "no_grad"] = "end_to_end",
        context_positions: bool = False,
        context_norm: bool = False,
        context_pooled: bool = False,
        text_refiner: int = 0,
        context_lr_scale: float = 1.0,
        snr_gamma: float | None = None,
        text_cache: str | None = None,
        init_from: str | None = None,
        lora: LoraSpec | None = None,
        nonfinite_patience: int = 8,
        adafactor_beta1: float | None = None,
        adafactor_beta2_cap: float | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
    ) -> None:
        config = resolve_unet_config(unet, init_from)
        if takes_weights_config(unet, init_from):
            rank_zero_info(f"unet {unet!r}: built from {init_from}'s config.json (the preset's widths are fitted)")
        super().__init__(
            unet_config=config,
            network=partial(
                InstructUNet,
                context_grad=context_grad,
                context_positions=context_positions,
                context_norm=context_norm,
                context_pooled=context_pooled,
                text_refiner=text_refiner,
            ),
            text_encoder=text_encoder,
            text_max_length=text_max_length,
            text_cache=text_cache,
            num_train_timesteps=num_train_timesteps,
            drop_text_and_context=drop_text_and_context,
            drop_context=drop_context,
            optimizer=OptimizerSpec(
                name=optimizer,
                learning_rate=learning_rate,
                warmup_steps=warmup_steps,
                weight_decay=weight_decay,
                adafactor_beta1=adafactor_beta1,
                adafactor_beta2_cap=adafactor_beta2_cap,
                context_lr_scale=context_lr_scale,
            ),
            init_from=init_from,
            lora=lora,
            nonfinite_patience=nonfinite_patience,
            snr_gamma=snr_gamma,
            gradient_checkpointing=gradient_checkpointing,
            compile=compile,
        )

    def predict_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        return self.generate(batch, seed=batch_idx)

    @torch.no_grad()
    def generate(
        self,
        instructions: InstructionBatch | list[Instruction],
        num_inference_steps: int | None = None,
        guidance: Guidance | None = None,
        seed: int = 0,
        scheduler: SchedulerMixin | None = None,
    ) -> torch.Tensor:
        """Generates one image per instruction (resized to `image_size`). The context is encoded once.

        Args:
            num_inference_steps, guidance, scheduler: override the default sampler's (`ddpm` with this model's
                `sample_steps` and `guidance_scale`); `scheduler` is any of `zoo.diffusion.samplers`'.

        Returns:
            images (B, 3, H, W) in [-1, 1].
        """
        sampler = self.default_sampler()
        sampler = replace(
            sampler,
            scheduler=scheduler or sampler.scheduler,
            num_inference_steps=sampler.num_inference_steps if num_inference_steps is None else num_inference_steps,
            guidance=guidance or sampler.guidance,
        )
        return self.guided_sample(self.collate(instructions), sampler, torch.Generator().manual_seed(seed))
