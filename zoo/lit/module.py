"""InstructImagen: the Lightning module for one cascade stage (the base model) trained on instructions.

It owns the frozen text encoder, the `InstructUNet` and the noise schedule, and wires them to the diffusion math in
`zoo.diffusion` (which takes the network as an argument). Configuration arrives as plain typed arguments from YAML
through LightningCLI, so a checkpoint's hyperparameters rebuild the module exactly (`load_from_checkpoint`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from diffusers import SchedulerMixin, UNet2DConditionModel
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from zoo.diffusion.objective import condition_dropout, v_loss
from zoo.diffusion.sampler import Guidance, sample
from zoo.diffusion.schedule import make_scheduler
from zoo.instruction import Instruction, InstructionBatch, collate_instructions
from zoo.lit.checkpointing import NonFiniteLossGuard, check_state_compatible, restore_rng_state, rng_state
from zoo.lora import LoraSpec, apply_lora, count_lora_layers, count_parameters
from zoo.models.instruct_unet import ContextTokens, InstructUNet
from zoo.models.presets import resolve_unet_config, takes_weights_config
from zoo.models.text import TextEncoder, build_text_encoder
from zoo.models.text_cache import TextEmbeddingCache
from zoo.models.weights import LoadReport, load_weights


class InstructImagen(LightningModule):
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
        text_cache: str | None = None,
        init_from: str | None = None,
        lora: LoraSpec | None = None,
        nonfinite_patience: int = 8,
        adafactor_beta1: float | None = None,
        adafactor_beta2_cap: float | None = None,
    ) -> None:
        super().__init__()
        lora = LoraSpec.coerce(lora)
        # The encoder is saved in its YAML form (a name, or class_path + init_args), never as a module; the LoRA
        # spec as a plain dict (checkpoints are read with torch.load(weights_only=True), which refuses classes).
        self.save_hyperparameters(ignore=["text_encoder", "lora"])
        self.hparams["lora"] = lora.to_dict() if lora is not None else None
        condition_dropout(1, drop_text_and_context, drop_context)  # validates the two probabilities now
        if adafactor_beta2_cap is not None and not 0.0 < adafactor_beta2_cap < 1.0:
            raise ValueError(f"adafactor_beta2_cap must be in (0, 1), got {adafactor_beta2_cap}")
        config = resolve_unet_config(unet, init_from)
        if takes_weights_config(unet, init_from):
            rank_zero_info(f"unet {unet!r}: built from {init_from}'s config.json (the preset's widths are fitted)")
        self.text_encoder = build_text_encoder(text_encoder, text_max_length)
        self.hparams["text_encoder"] = (
            text_encoder if isinstance(text_encoder, str) else self.text_encoder.config_spec()
        )
        check_text_width(config, self.text_encoder)
        self.model = InstructUNet(UNet2DConditionModel(**config), context_grad=context_grad)
        self.scheduler = make_scheduler(num_train_timesteps)
        self.text_cache = TextEmbeddingCache(text_cache, self.text_encoder) if text_cache else None
        self.init_report: LoadReport | None = None
        if init_from is not None:
            self.load_weights(init_from)
        self.lora_config = apply_lora(self.model, lora) if lora is not None else None
        self.nonfinite = NonFiniteLossGuard(nonfinite_patience)

    # ----------------------------------------------------------------------------------------------- conditions
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.text_cache is not None:
            return self.text_cache.encode(self.text_encoder, texts)
        return self.text_encoder(texts)

    def encode_context(self, batch: InstructionBatch, keep: torch.Tensor | None = None) -> ContextTokens:
        """Context tokens for a batch; `keep` (B,) bool drops whole contexts (dropped items are never encoded)."""
        item_mask = batch.context_mask if keep is None else batch.context_mask & keep[:, None]
        b, k = item_mask.shape
        flat_texts = [text for row in batch.context_texts for text in row]
        if k == 0:
            text = torch.zeros(b, 0, self.text_encoder.max_length, self.text_encoder.dim, device=self.device)
            text_mask = torch.zeros(b, 0, self.text_encoder.max_length, dtype=torch.bool, device=self.device)
        else:
            text, text_mask = self.encode_text(flat_texts)
            text, text_mask = text.view(b, k, *text.shape[1:]), text_mask.view(b, k, -1)
        return self.model.encode_context(batch.context_images, text, text_mask, item_mask)

    # ------------------------------------------------------------------------------------------------- training
    def training_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        drop_all, drop_ctx = condition_dropout(
            len(batch), self.hparams.drop_text_and_context, self.hparams.drop_context
        )
        texts = ["" if drop else text for text, drop in zip(batch.texts, drop_all.tolist())]
        text, text_mask = self.encode_text(texts)
        context = self.encode_context(batch, keep=~(drop_all | drop_ctx).to(self.device))
        loss = v_loss(lambda x_t, t: self.model(x_t, t, text, text_mask, context), self.scheduler, batch.target)
        # A NaN/inf loss on any rank skips the step on every rank (returning None skips backward and the update).
        finite = bool(torch.isfinite(loss))
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        self.nonfinite.update(finite, self.global_step)
        self.log("train/skipped_nonfinite", float(self.nonfinite.total), batch_size=len(batch))
        if not finite:
            return None
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        text, text_mask = self.encode_text(batch.texts)
        context = self.encode_context(batch)
        generator = torch.Generator().manual_seed(batch_idx)  # the same noise and timesteps every validation
        loss = v_loss(
            lambda x_t, t: self.model(x_t, t, text, text_mask, context), self.scheduler, batch.target, generator
        )
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def test_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        return self.validation_step(batch, batch_idx)

    def predict_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        return self.generate(batch, seed=batch_idx)

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        hp = self.hparams
        beta1, beta2_cap = hp.get("adafactor_beta1"), hp.get("adafactor_beta2_cap")
        if hp.optimizer == "adafactor" and (beta1 is not None or beta2_cap is not None):
            from transformers.optimization import Adafactor

            from zoo.lit.adafactor import CappedAdafactor

            settings = dict(
                lr=hp.learning_rate,
                beta1=beta1,
                weight_decay=hp.weight_decay,
                scale_parameter=False,
                relative_step=False,
                warmup_init=False,
            )
            if beta2_cap is None:
                optimizer = Adafactor(params, **settings)
            else:
                optimizer = CappedAdafactor(params, beta2_cap, **settings)
        elif hp.optimizer == "adafactor":
            optimizer = torch.optim.Adafactor(
                params, lr=hp.learning_rate, beta2_decay=-0.8, weight_decay=hp.weight_decay
            )
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, betas=(0.9, 0.999), weight_decay=hp.weight_decay)
        warmup = max(hp.warmup_steps, 0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ----------------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        instructions: InstructionBatch | list[Instruction],
        num_inference_steps: int | None = None,
        guidance: Guidance | None = None,
        seed: int = 0,
        scheduler: SchedulerMixin | None = None,
    ) -> torch.Tensor:
        """Generates one image per instruction. The context is encoded once and reused at every step.

        `scheduler` replaces the training schedule's DDPM for sampling (see `zoo.diffusion.samplers`).

        Returns:
            images (B, 3, H, W) in [-1, 1].
        """
        batch = instructions
        if not isinstance(batch, InstructionBatch):
            size = (self.hparams.image_size, self.hparams.image_size)
            batch = collate_instructions(instructions, image_size=size)
        batch = batch.to(self.device)
        b = len(batch)
        guidance = guidance or Guidance(scale=self.hparams.guidance_scale)
        # 1. conditions, once: payload text, the null text, and the context tokens
        text, text_mask = self.encode_text(batch.texts)
        null_text, null_mask = self.encode_text([""] * b)
        context = self.encode_context(batch)
        no_context = ContextTokens(context.tokens, torch.zeros_like(context.mask))
        branches = {
            "full": (text, text_mask, context),
            "text": (text, text_mask, no_context),
            "null": (null_text, null_mask, no_context),
        }

        # 2. one batched network call per step for all requested branches
        joined: dict[tuple[str, ...], tuple] = {}  # each branch combination's conditions, concatenated once

        def model_fn(x_t: torch.Tensor, t: torch.Tensor, names: tuple[str, ...]) -> list[torch.Tensor]:
            if names not in joined:
                parts = [branches[name] for name in names]
                joined[names] = (
                    torch.cat([p[0] for p in parts]),
                    torch.cat([p[1] for p in parts]),
                    ContextTokens.cat([p[2] for p in parts]),
                )
            n = len(names)
            v = self.model(torch.cat([x_t] * n), torch.cat([t] * n), *joined[names])
            # A learned-variance UNet (DeepFloyd IF: out_channels = 2 × in_channels) also predicts a variance; the
            # fixed-variance schedule uses the first half only, as diffusers' IFPipeline does.
            return list(v[:, : x_t.shape[1]].chunk(n))

        # 3. the reverse process
        generator = torch.Generator().manual_seed(seed)
        size = self.hparams.image_size
        noise = torch.randn(b, self.model.config.in_channels, size, size, generator=generator).to(self.device)
        steps = self.hparams.sample_steps if num_inference_steps is None else num_inference_steps
        return sample(model_fn, scheduler or self.scheduler, noise, steps, guidance, generator)

    def on_fit_start(self) -> None:
        trainable, total = count_parameters(self)
        what = (
            f"LoRA rank {self.hparams.lora['rank']} on {count_lora_layers(self.model)} layers"
            if self.lora_config
            else "full"
        )
        rank_zero_info(f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%, {what})")

    # ---------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Never write non-finite weights: the last good checkpoint stays the newest one.
        bad = [k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise RuntimeError(
                f"refusing to save a checkpoint with non-finite weights in {bad[:5]}; the last good checkpoint is kept"
            )
        checkpoint["zoo_rng_state"] = rng_state()
        checkpoint["zoo_nonfinite"] = self.nonfinite.state_dict()
        keep_frozen_weights_out_of_the_average(checkpoint, self)
        self.text_encoder.drop_from(checkpoint["state_dict"], "text_encoder.")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if state is not None:  # absent when the strategy has loaded the weights itself (zoo.lit.fsdp: FSDP)
            self.text_encoder.fill_into(state, "text_encoder.")
            if self.lora_config is not None and state and all(".lora_" in k for k in state):
                # an adapter-only checkpoint (zoo.lit.fsdp.FSDPStrategyForLoRA): the frozen base comes from init_from
                state.update({k: v for k, v in self.state_dict().items() if k not in state})
            check_state_compatible(self.state_dict(), state, "the checkpoint")
        if "current_model_state" in checkpoint:  # written by EMAWeightAveraging: the live (non-averaged) weights
            check_state_compatible(
                self.state_dict(), checkpoint["current_model_state"], "the checkpoint's current_model_state"
            )
        self.nonfinite.load_state_dict(checkpoint.get("zoo_nonfinite", {}))
        if self._trainer is not None and self.trainer.training and "zoo_rng_state" in checkpoint:
            restore_rng_state(checkpoint["zoo_rng_state"])  # resuming a fit: continue the same random stream

    def load_weights(self, path: str) -> LoadReport:
        """Weights only (no optimizer or trainer state) from `path` (see `init_from`); reports what was new.

        Raises:
            ValueError: naming missing, unexpected or mis-shaped keys other than the new context layers, or the
                config fields where a diffusers folder differs from this backbone.
        """
        self.init_report = load_weights(self, path, dict(self.model.unet.config))
        rank_zero_info(self.init_report.summary())
        return self.init_report


def keep_frozen_weights_out_of_the_average(checkpoint: dict[str, Any], module: torch.nn.Module) -> None:
    """Writes the frozen parameters' own values into an averaged checkpoint's `state_dict`.

    A weight-averaging callback (Lightning's `EMAWeightAveraging`) averages every parameter, frozen ones too, and
    `decay · w + (1 − decay) · w` is not exactly `w` in floating point: a LoRA run's frozen base would drift by ~1e-6,
    so the adapter's base fingerprint would match no base but the run's own. Frozen parameters never move, so their
    live values (`current_model_state`, written by the callback, which runs before this module hook) are the
    weights the run started from. Checkpoints without an average are left as they are.
    """
    live = checkpoint.get("current_model_state")
    if live is None:
        return
    averaged = checkpoint["state_dict"]
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad and name in averaged and name in live:
            averaged[name] = live[name]


def check_text_width(unet_config: dict[str, Any], encoder: TextEncoder) -> None:
    """The text encoder's width must be what the UNet reads: `encoder_hid_dim` if set, else `cross_attention_dim`."""
    hid, cross = unet_config.get("encoder_hid_dim"), unet_config.get("cross_attention_dim")
    expected = hid if hid is not None else cross
    if encoder.dim != expected:
        reads = f"encoder_hid_dim {hid}" if hid is not None else f"cross_attention_dim {cross}"
        raise ValueError(
            f"text encoder {encoder.name_or_path!r} gives {encoder.dim}-d embeddings "
            f"but the UNet reads {expected}-d text "
            f"({reads}); pick a matching pair, or set encoder_hid_dim: {encoder.dim} in the unet config to add a "
            "learned projection (diffusers encoder_hid_proj)"
        )
