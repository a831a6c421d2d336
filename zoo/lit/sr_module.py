"""SuperResolution: the Lightning module for the cascade's second stage, trained alone on the same instructions.

A batch's targets arrive at the SR resolution (the data module's `image_size`); the low-resolution input is made
from them by downsampling to `lowres_size`, upsampling back, and Imagen's noise conditioning augmentation (arXiv
2205.11487 §2.5): "we corrupt the low-resolution image with Gaussian noise at a random level during training and
condition the model on it ... at inference we use a fixed level". Here the level is a timestep of the training
schedule (as DeepFloyd IF-II's `noise_level`): uniform over [0, `lowres_max_noise_level`] × T while training and
`lowres_sample_noise_level` × T when sampling (imagen-pytorch's `lowres_sample_noise_level` default is 0.2; Imagen
sweeps 0.1–0.3). The text is the payload instruction (the paper's SR reads "Text Instr.", Table 5); with
`read_context=True` the SR UNet also reads the context (beyond the paper).

Everything else is shared with the base stage through `zoo.lit.stage.Stage`: the frozen text encoder (names, paths
or class_path encoders) and its text cache, the v-objective with condition dropout and the non-finite-loss guard,
the checkpoint hooks, LoRA, the optimizer settings and the guided-sampling loop.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from zoo.diffusion.samplers import Sampler
from zoo.diffusion.schedule import q_sample
from zoo.instruction import Instruction, InstructionBatch
from zoo.lit.optimizer import OptimizerSpec
from zoo.lit.stage import Stage
from zoo.lora import LoraSpec
from zoo.models.instruct_unet import ContextTokens
from zoo.models.sr_unet import SuperResUNet, downsample, sr_unet_config, upsample
from zoo.models.text import TextEncoder


class SuperResolution(Stage):
    """Text-conditioned super-resolution from `lowres_size` to `image_size`.

    Args:
        unet: a preset name or a `UNet2DConditionModel` config; turned into SR form (6 input channels, a timestep
            class embedding for the augmentation level) by `sr_unet_config`.
        text_encoder, text_max_length, text_cache: as for the base stage (frozen; a name, a path or a class_path
            `TextEncoder`, whose width must match the UNet's).
        image_size: output resolution (linked from `data.image_size` by the CLI).
        lowres_size: input resolution (the base stage's image size).
        read_context: also read the multimodal context (beyond the paper; off by default).
        lowres_max_noise_level: training augmentation levels are drawn uniformly in [0, this] (fraction of T).
        lowres_sample_noise_level: the fixed augmentation level used when sampling (fraction of T).
        drop_text_and_context, drop_context: condition dropout for classifier-free guidance (Imagen: text 10%).
        learning_rate, warmup_steps, optimizer, weight_decay, adafactor_beta1, adafactor_beta2_cap: as for the base
            stage (Imagen SR: Adam, 1e-4, 10k).
        num_train_timesteps, sample_steps, guidance_scale: schedule length and `generate` defaults.
        init_from: weights (only) that start this run, as for the base stage: a Lightning checkpoint of this stage, a
            diffusers UNet or pipeline folder in SR form (e.g. DeepFloyd `IF-II-L-v1.0/unet`, converted to 3 output
            channels as `recipes/scale/deepfloyd_if.yaml` shows) or a `.safetensors` file. With `read_context`, the
            new context layers are the only keys that may be missing; anything else is an error naming the keys.
        lora: train LoRA adapters instead of the whole network, as for the base stage; the target sets name the
            backbone's attention and, with `read_context`, the context layers'.
        nonfinite_patience: a NaN/inf loss skips its step; this many in a row stop training.
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
        lowres_size: int = 16,
        read_context: bool = False,
        lowres_max_noise_level: float = 1.0,
        lowres_sample_noise_level: float = 0.2,
        drop_text_and_context: float = 0.1,
        drop_context: float = 0.1,
        learning_rate: float = 1e-4,
        warmup_steps: int = 0,
        optimizer: Literal["adamw", "adafactor"] = "adamw",
        weight_decay: float = 0.0,
        num_train_timesteps: int = 1000,
        sample_steps: int = 50,
        guidance_scale: float = 3.0,
        init_from: str | None = None,
        text_cache: str | None = None,
        lora: LoraSpec | None = None,
        nonfinite_patience: int = 8,
        adafactor_beta1: float | None = None,
        adafactor_beta2_cap: float | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
    ) -> None:
        if not 0 < lowres_size < image_size:
            raise ValueError(f"lowres_size must be between 0 and image_size={image_size}; got {lowres_size}")
        for name, level in [
            ("lowres_max_noise_level", lowres_max_noise_level),
            ("lowres_sample_noise_level", lowres_sample_noise_level),
        ]:
            if not 0.0 <= level <= 1.0:
                raise ValueError(f"{name} is a fraction of the schedule, in [0, 1]; got {level}")
        super().__init__(
            unet_config=sr_unet_config(unet, image_size, init_from),
            network=partial(SuperResUNet, read_context=read_context),
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
            ),
            init_from=init_from,
            lora=lora,
            nonfinite_patience=nonfinite_patience,
            gradient_checkpointing=gradient_checkpointing,
            compile=compile,
        )

    # ------------------------------------------------------------------------------------------ the SR network
    @property
    def reads_context(self) -> bool:
        return self.hparams.read_context

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        context: ContextTokens | None,
        *inputs: torch.Tensor,
    ) -> torch.Tensor:
        """v for x_t given the conditions and `inputs` = (the upsampled noise-augmented low-res image, its level)."""
        lowres, level = inputs
        return self.model(x_t, t, lowres, level, text, text_mask, context)

    def weight_prefixes(self) -> tuple[str, str]:
        net = "model.net."
        return (net + "unet." if self.hparams.read_context else net), net + "context_layers."

    def lora_root(self) -> nn.Module:
        # The InstructUNet (unet.*, context_layers.*) or the bare UNet: the names LoRA's target sets are written for.
        return self.model.net

    # ----------------------------------------------------------------------------- noise conditioning augmentation
    def noise_augment(
        self, lowres: torch.Tensor, level: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Upsamples (B, 3, h, w) to the output size and noises it to timestep `level` (B,): q(z_level | lowres)."""
        up = upsample(lowres, self.hparams.image_size)
        eps = torch.randn(up.shape, generator=generator).to(up)
        return q_sample(self.scheduler, up, level, eps)

    def augmentation_levels(self, b: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training levels: uniform timesteps in [0, lowres_max_noise_level × (T - 1)]."""
        top = int(round(self.hparams.lowres_max_noise_level * (self.scheduler.config.num_train_timesteps - 1)))
        return torch.randint(0, top + 1, (b,), generator=generator).to(self.network_device)

    def stage_inputs(self, batch: InstructionBatch, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        """The low-resolution input: the target downsampled, upsampled back and noise-augmented at a random level."""
        level = self.augmentation_levels(len(batch), generator)
        lowres = self.noise_augment(downsample(batch.target, self.hparams.lowres_size), level, generator)
        return lowres, level

    # ----------------------------------------------------------------------------------------------- generation
    def predict_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        lowres = downsample(batch.target, self.hparams.lowres_size)
        return self.generate(batch, lowres, seed=batch_idx)

    @torch.no_grad()
    def generate(
        self,
        instructions: InstructionBatch | list[Instruction],
        lowres: torch.Tensor,
        sampler: Sampler | None = None,
        seed: int = 0,
        noise_level: float | None = None,
    ) -> torch.Tensor:
        """Upsamples `lowres` (B, 3, h, w) in [-1, 1] to (B, 3, image_size, image_size) for the instructions.

        Args:
            instructions: one per low-resolution image (their context images at any size are resized here).
            sampler: scheduler, steps and guidance (default: `ddpm` with this model's settings).
            noise_level: augmentation level as a fraction of T (default: `lowres_sample_noise_level`).
        """
        batch = self.collate(instructions)
        if len(batch) != lowres.shape[0]:
            raise ValueError(f"{len(batch)} instructions but {lowres.shape[0]} low-resolution images")
        generator = torch.Generator().manual_seed(seed)
        # the noise-augmented low-resolution image at a fixed level: the same in every branch and step
        fraction = self.hparams.lowres_sample_noise_level if noise_level is None else noise_level
        level = int(round(fraction * (self.scheduler.config.num_train_timesteps - 1)))
        level = torch.full((len(batch),), level, device=self.network_device)
        lowres = self.noise_augment(lowres.to(self.network_device), level, generator)
        return self.guided_sample(batch, sampler or self.default_sampler(), generator, (lowres, level))
