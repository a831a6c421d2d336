"""SuperResolution: the Lightning module for the cascade's second stage, trained alone on the same instructions.

A batch's targets arrive at the SR resolution (the data module's `image_size`); the low-resolution input is made
from them by downsampling to `lowres_size`, upsampling back, and Imagen's noise conditioning augmentation (arXiv
2205.11487 §2.5): "we corrupt the low-resolution image with Gaussian noise at a random level during training and
condition the model on it ... at inference we use a fixed level". Here the level is a timestep of the training
schedule (as DeepFloyd IF-II's `noise_level`): uniform over [0, `lowres_max_noise_level`] × T while training and
`lowres_sample_noise_level` × T when sampling (imagen-pytorch's `lowres_sample_noise_level` default is 0.2; Imagen
sweeps 0.1–0.3). The text is the payload instruction (the paper's SR reads "Text Instr.", Table 5); with
`read_context=True` the SR UNet also reads the context (beyond the paper).

Shared with the base stage (`InstructImagen`): the frozen text encoder, the v-objective and condition dropout, the
optimizer settings, and keeping a pretrained text encoder out of checkpoints.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from diffusers import UNet2DConditionModel
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from zoo.diffusion.objective import condition_dropout, v_loss
from zoo.diffusion.sampler import sample
from zoo.diffusion.samplers import Sampler, make_sampler
from zoo.diffusion.schedule import make_scheduler, q_sample
from zoo.instruction import Instruction, InstructionBatch, collate_instructions
from zoo.lit.data import resize_instruction
from zoo.lit.module import InstructImagen
from zoo.models.instruct_unet import ContextTokens
from zoo.models.sr_unet import SuperResUNet, downsample, sr_unet_config, upsample
from zoo.models.text import TextEncoder
from zoo.models.weights import LoadReport, load_weights


class SuperResolution(LightningModule):
    """Text-conditioned super-resolution from `lowres_size` to `image_size`.

    Args:
        unet: a preset name or a `UNet2DConditionModel` config; turned into SR form (6 input channels, a timestep
            class embedding for the augmentation level) by `sr_unet_config`.
        text_encoder, text_max_length: as for the base stage (frozen).
        image_size: output resolution (linked from `data.image_size` by the CLI).
        lowres_size: input resolution (the base stage's image size).
        read_context: also read the multimodal context (beyond the paper; off by default).
        lowres_max_noise_level: training augmentation levels are drawn uniformly in [0, this] (fraction of T).
        lowres_sample_noise_level: the fixed augmentation level used when sampling (fraction of T).
        drop_text_and_context, drop_context: condition dropout for classifier-free guidance (Imagen: text 10%).
        learning_rate, warmup_steps, optimizer, weight_decay: as for the base stage (Imagen SR: Adam, 1e-4, 10k).
        num_train_timesteps, sample_steps, guidance_scale: schedule length and `generate` defaults.
        init_from: weights (only) that start this run, as for the base stage: a Lightning checkpoint of this stage, a
            diffusers UNet or pipeline folder in SR form (e.g. DeepFloyd `IF-II-L-v1.0/unet`, converted to 3 output
            channels as `recipes/scale/deepfloyd_if.yaml` shows) or a `.safetensors` file. With `read_context`, the
            new context layers are the only keys that may be missing; anything else is an error naming the keys.
    """

    def __init__(
        self,
        unet: str | dict[str, Any] = "tiny",
        text_encoder: str = "builtin:tiny-t5",
        text_max_length: int = 64,
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not 0 < lowres_size < image_size:
            raise ValueError(f"lowres_size must be between 0 and image_size={image_size}; got {lowres_size}")
        for name, level in [
            ("lowres_max_noise_level", lowres_max_noise_level),
            ("lowres_sample_noise_level", lowres_sample_noise_level),
        ]:
            if not 0.0 <= level <= 1.0:
                raise ValueError(f"{name} is a fraction of the schedule, in [0, 1]; got {level}")
        condition_dropout(1, drop_text_and_context, drop_context)  # validates the two probabilities now
        config = sr_unet_config(unet, image_size, init_from)
        self.text_encoder = TextEncoder(text_encoder, max_length=text_max_length)
        if config.get("cross_attention_dim") != self.text_encoder.dim:
            raise ValueError(
                f"text encoder {text_encoder!r} gives {self.text_encoder.dim}-d embeddings but the UNet's "
                f"cross_attention_dim is {config.get('cross_attention_dim')}; pick a matching pair"
            )
        self.model = SuperResUNet(UNet2DConditionModel(**config), read_context=read_context)
        self.scheduler = make_scheduler(num_train_timesteps)
        self.init_report: LoadReport | None = None
        if init_from is not None:
            self.load_weights(init_from)

    def load_weights(self, path: str) -> LoadReport:
        """Weights only from `path` (see `init_from`); reports what was new (the context layers, if read)."""
        prefix = "model.net.unet." if self.hparams.read_context else "model.net."
        self.init_report = load_weights(self, path, dict(self.model.unet.config), prefix, "model.net.context_layers.")
        rank_zero_info(self.init_report.summary())
        return self.init_report

    # The same optimizer settings as the base stage (it reads only the optimizer hyperparameters both stages share).
    configure_optimizers = InstructImagen.configure_optimizers

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.text_encoder.drop_from(checkpoint["state_dict"], "text_encoder.")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if state is not None:  # absent when the strategy has loaded the weights itself (zoo.lit.fsdp: FSDP)
            self.text_encoder.fill_into(state, "text_encoder.")

    # ----------------------------------------------------------------------------------------------- conditions
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder(texts)

    def encode_context(self, batch: InstructionBatch, keep: torch.Tensor | None = None) -> ContextTokens | None:
        """Context tokens (None when the UNet does not read the context); `keep` (B,) bool drops whole contexts."""
        if not self.hparams.read_context:
            return None
        item_mask = batch.context_mask if keep is None else batch.context_mask & keep[:, None]
        b, k = item_mask.shape
        if k == 0:
            text = torch.zeros(b, 0, self.text_encoder.max_length, self.text_encoder.dim, device=self.device)
            text_mask = torch.zeros(b, 0, self.text_encoder.max_length, dtype=torch.bool, device=self.device)
        else:
            text, text_mask = self.encode_text([text for row in batch.context_texts for text in row])
            text, text_mask = text.view(b, k, *text.shape[1:]), text_mask.view(b, k, -1)
        return self.model.encode_context(batch.context_images, text, text_mask, item_mask)

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
        return torch.randint(0, top + 1, (b,), generator=generator).to(self.device)

    # ------------------------------------------------------------------------------------------------- training
    def _loss(self, batch: InstructionBatch, keep_all: bool, generator: torch.Generator | None) -> torch.Tensor:
        b = len(batch)
        if keep_all:
            drop_all = drop_ctx = torch.zeros(b, dtype=torch.bool)
        else:
            drop_all, drop_ctx = condition_dropout(b, self.hparams.drop_text_and_context, self.hparams.drop_context)
        # 1. conditions: text (dropped to "" for the unconditional branch) and context
        text, text_mask = self.encode_text(["" if drop else t for t, drop in zip(batch.texts, drop_all.tolist())])
        context = self.encode_context(batch, keep=~(drop_all | drop_ctx).to(self.device))
        # 2. the low-resolution input: downsample the target, upsample back, noise-augment at a random level
        level = self.augmentation_levels(b, generator)
        lowres = self.noise_augment(downsample(batch.target, self.hparams.lowres_size), level, generator)
        # 3. the v-objective on the high-resolution target
        return v_loss(
            lambda x_t, t: self.model(x_t, t, lowres, level, text, text_mask, context),
            self.scheduler,
            batch.target,
            generator,
        )

    def training_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, keep_all=False, generator=None)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(batch_idx)  # the same noise, levels and timesteps every validation
        loss = self._loss(batch, keep_all=True, generator=generator)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def test_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        return self.validation_step(batch, batch_idx)

    def predict_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        lowres = downsample(batch.target, self.hparams.lowres_size)
        return self.generate(batch, lowres, seed=batch_idx)

    # ----------------------------------------------------------------------------------------------- generation
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
        size = self.hparams.image_size
        batch = instructions
        if not isinstance(batch, InstructionBatch):
            batch = collate_instructions([resize_instruction(i, size) for i in instructions], image_size=(size, size))
        if len(batch) != lowres.shape[0]:
            raise ValueError(f"{len(batch)} instructions but {lowres.shape[0]} low-resolution images")
        batch = batch.to(self.device)
        b = len(batch)
        hp = self.hparams
        sampler = sampler or make_sampler(
            "ddpm", self.scheduler, default_steps=hp.sample_steps, default_guidance_scale=hp.guidance_scale
        )
        generator = torch.Generator().manual_seed(seed)
        # 1. conditions, once: text, null text, context, and the augmented low-res image (fixed for every step)
        level_fraction = hp.lowres_sample_noise_level if noise_level is None else noise_level
        level = torch.full(
            (b,), int(round(level_fraction * (self.scheduler.config.num_train_timesteps - 1))), device=self.device
        )
        lowres = self.noise_augment(lowres.to(self.device), level, generator)
        text, text_mask = self.encode_text(batch.texts)
        null_text, null_mask = self.encode_text([""] * b)
        context = self.encode_context(batch)
        no_context = None if context is None else ContextTokens(context.tokens, torch.zeros_like(context.mask))
        branches = {
            "full": (text, text_mask, context),
            "text": (text, text_mask, no_context),
            "null": (null_text, null_mask, no_context),
        }

        # 2. one batched network call per step for all requested branches (the low-res image is never dropped)
        def model_fn(x_t: torch.Tensor, t: torch.Tensor, names: tuple[str, ...]) -> list[torch.Tensor]:
            parts = [branches[name] for name in names]
            n = len(parts)
            v = self.model(
                torch.cat([x_t] * n),
                torch.cat([t] * n),
                torch.cat([lowres] * n),
                torch.cat([level] * n),
                torch.cat([p[0] for p in parts]),
                torch.cat([p[1] for p in parts]),
                None if context is None else ContextTokens.cat([p[2] for p in parts]),
            )
            return list(v.chunk(n))

        # 3. the reverse process
        noise = torch.randn(b, 3, size, size, generator=generator).to(self.device)
        return sample(model_fn, sampler.scheduler, noise, sampler.num_inference_steps, sampler.guidance, generator)
