"""Stage: the Lightning module a cascade stage extends (`InstructImagen`, the base; `SuperResolution`).

A stage is a denoising network plus what surrounds it whatever the network is:
    - the frozen text encoder (a name, a path or a class_path `TextEncoder`), its width checked against the UNet, and
      the text-embedding cache; `encode_text` and `encode_context`;
    - the v-objective with condition dropout (arXiv 2401.01952 §2.4) and the non-finite-loss guard;
    - the checkpoint hooks: RNG state, no non-finite weights, the pretrained encoder kept out, strict compatibility;
    - `init_from` weights, LoRA (`zoo.lora.LoraSpec`) and the optimizer (`zoo.lit.optimizer.OptimizerSpec`);
    - one guided-sampling loop over a `zoo.diffusion.samplers.Sampler`.

Scale switches, both off by default: `gradient_checkpointing` (diffusers' activation recomputation over the backbone,
the context pass and the context layers: `InstructUNet.enable_gradient_checkpointing`) and `compile` (`torch.compile`
of the backbone UNet in place, its context hooks traced with it, at fit start or on first use; the context pass runs
eagerly). A network whose weights are cast (`InstructImagenPipeline.to(dtype)`) gets its inputs in its own dtype
while the sampler's state stays fp32; the frozen text encoder runs in its own (`zoo.models.text`).

A subclass says what differs: its network (`network`, given to `__init__`) and how it is called (`denoise`), the
inputs it adds to the text and context (`stage_inputs`; SR: the low-resolution image and its noise level), and where
its weights sit (`weight_prefixes`, `lora_root`). Its `__init__` arguments are the hyperparameters (typed, so they
are the YAML config); the loop and the loss read the shared ones: `image_size`, `drop_text_and_context`,
`drop_context`, `sample_steps` and `guidance_scale`.
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from zoo.diffusion.objective import condition_dropout, v_loss
from zoo.diffusion.sampler import sample
from zoo.diffusion.samplers import Sampler, make_sampler
from zoo.diffusion.schedule import make_scheduler
from zoo.instruction import Instruction, InstructionBatch, collate_instructions
from zoo.lit.checkpointing import NonFiniteLossGuard, check_state_compatible, restore_rng_state, rng_state
from zoo.lit.optimizer import OptimizerSpec
from zoo.lora import LoraSpec, apply_lora, count_lora_layers, count_parameters
from zoo.models.instruct_unet import ContextTokens
from zoo.models.text import TextEncoder, build_text_encoder
from zoo.models.text_cache import TextEmbeddingCache
from zoo.models.weights import LoadReport, load_weights

IMAGE_CHANNELS = 3  # a stage makes RGB images, the schema's (3, H, W)


class Stage(LightningModule):
    """The parts every cascade stage shares (see the module docstring); subclasses pass their arguments up.

    Args:
        unet_config: the backbone's `UNet2DConditionModel` config (in the stage's form).
        network: wraps the built backbone into the stage's denoiser (e.g. `InstructUNet`).
        text_encoder, text_max_length, text_cache, num_train_timesteps, drop_text_and_context, drop_context,
            init_from, lora, nonfinite_patience: as the stages document them.
        optimizer: the optimizer settings, gathered from the stage's flat arguments.
        snr_gamma: min-SNR-γ weighting of the training loss (`zoo.diffusion.objective.min_snr_weight`); None: plain
            L2 (the paper). Validation always reports the plain loss, so runs with and without it compare.
        gradient_checkpointing: recompute the network's activations in backward instead of keeping them.
        compile: `torch.compile` the backbone UNet at fit start or on first use (`compile_backbone`).
    """

    def __init__(
        self,
        unet_config: dict[str, Any],
        network: Callable[[UNet2DConditionModel], nn.Module],
        text_encoder: str | TextEncoder,
        text_max_length: int | None,
        text_cache: str | None,
        num_train_timesteps: int,
        drop_text_and_context: float,
        drop_context: float,
        optimizer: OptimizerSpec,
        init_from: str | None,
        lora: LoraSpec | dict[str, Any] | None,
        nonfinite_patience: int,
        snr_gamma: float | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if snr_gamma is not None and not snr_gamma > 0:
            raise ValueError(f"model.snr_gamma must be > 0 (Hang et al. use 5) or null, got {snr_gamma}")
        lora = LoraSpec.coerce(lora)
        # The subclass's arguments (its caller's frame) are the hyperparameters. The encoder is saved in its YAML form
        # (a name, or class_path + init_args), never as a module; the LoRA spec as a plain dict (checkpoints are read
        # with torch.load(weights_only=True), which refuses classes).
        self.save_hyperparameters(ignore=["text_encoder", "lora"], frame=inspect.currentframe().f_back)
        self.hparams["lora"] = lora.to_dict() if lora is not None else None
        condition_dropout(1, drop_text_and_context, drop_context)  # validates the two probabilities now
        self.optimizer_spec = optimizer
        # 1. the frozen text encoder, checked against the width the UNet reads
        self.text_encoder = build_text_encoder(text_encoder, text_max_length)
        self.hparams["text_encoder"] = (
            text_encoder if isinstance(text_encoder, str) else self.text_encoder.config_spec()
        )
        check_text_width(unet_config, self.text_encoder)
        # 2. the network and its noise schedule
        self.model = network(UNet2DConditionModel(**unet_config))
        self.scheduler = make_scheduler(num_train_timesteps)
        self.text_cache = TextEmbeddingCache(text_cache, self.text_encoder) if text_cache else None
        # 3. the starting weights, then LoRA on them
        self.init_report: LoadReport | None = None
        if init_from is not None:
            self.load_weights(init_from)
        self.lora_config = apply_lora(self.lora_root(), lora) if lora is not None else None
        self.nonfinite = NonFiniteLossGuard(nonfinite_patience)
        # 4. the scale switches (after LoRA: checkpointing then recomputes the adapted layers too)
        if gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self._compiled = False

    # ----------------------------------------------------------------------------------- what a subclass says
    @property
    def reads_context(self) -> bool:
        """Whether the network reads the multimodal context."""
        return True

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        context: ContextTokens | None,
        *inputs: torch.Tensor,
    ) -> torch.Tensor:
        """The network's v for x_t (B, C, H, W) at t (B,), given the conditions and the `stage_inputs`."""
        return self.model(x_t, t, text, text_mask, context)

    def stage_inputs(self, batch: InstructionBatch, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        """Per-item network inputs besides text and context for the loss, each (B, ...); none for the base stage."""
        return ()

    def weight_prefixes(self) -> tuple[str, str]:
        """Where the backbone's and the context layers' keys sit in this module's state (for `init_from`)."""
        return "model.unet.", "model.context_layers."

    def lora_root(self) -> nn.Module:
        """The module LoRA adapts: the one whose names `zoo.lora`'s target sets are written for."""
        return self.model

    @property
    def network_device(self) -> torch.device:
        """Where the network's weights are, so where its inputs go: the stage's device, unless a pipeline offloads
        (`InstructImagenPipeline.enable_model_cpu_offload` moves the network and the text encoder in turn)."""
        return next(self.model.parameters()).device

    @property
    def network_dtype(self) -> torch.dtype:
        """The dtype of the backbone's weights: what its inputs are cast to (fp32 under mixed precision)."""
        return self.model.unet.dtype

    def compile_network(self) -> None:
        """`torch.compile` of the backbone in place, once, when `compile` is set (`compile_backbone`)."""
        if self.hparams.get("compile") and not self._compiled:
            compile_backbone(self.model.unet, self.network_device)
            self._compiled = True

    # ----------------------------------------------------------------------------------------------- conditions
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (B, L, D) on the network's device, in its dtype (the encoder runs in its own), and mask (B, L)."""
        if self.text_cache is not None:
            text, mask = self.text_cache.encode(self.text_encoder, texts)
        else:
            text, mask = self.text_encoder(texts)
        return text.to(self.network_device, self.network_dtype), mask.to(self.network_device)

    def encode_context(self, batch: InstructionBatch, keep: torch.Tensor | None = None) -> ContextTokens | None:
        """Context tokens for a batch (None when the network does not read the context); `keep` (B,) bool drops
        whole contexts (dropped items are never encoded)."""
        if not self.reads_context:
            return None
        item_mask = batch.context_mask if keep is None else batch.context_mask & keep[:, None]
        b, k = item_mask.shape
        if k == 0:
            text = torch.zeros(b, 0, self.text_encoder.max_length, self.text_encoder.dim, device=self.network_device)
            text_mask = torch.zeros(b, 0, self.text_encoder.max_length, dtype=torch.bool, device=self.network_device)
        else:
            text, text_mask = self.encode_text([text for row in batch.context_texts for text in row])
            text, text_mask = text.view(b, k, *text.shape[1:]), text_mask.view(b, k, -1)
        images = batch.context_images.to(self.network_dtype)
        return self.model.encode_context(images, text, text_mask, item_mask)

    # ------------------------------------------------------------------------------------------------- training
    def loss(
        self,
        batch: InstructionBatch,
        dropout: bool,
        generator: torch.Generator | None = None,
        snr_gamma: float | None = None,
    ) -> torch.Tensor:
        """The v-objective on a batch; `dropout` drops conditions as training does (validation keeps them all), and
        `snr_gamma` weights it (`v_loss`)."""
        self.compile_network()
        b = len(batch)
        # 1. conditions: the text (dropped to "" for the unconditional branch) and the context
        if dropout:
            drop_all, drop_ctx = condition_dropout(b, self.hparams.drop_text_and_context, self.hparams.drop_context)
        else:
            drop_all = drop_ctx = torch.zeros(b, dtype=torch.bool)
        text, text_mask = self.encode_text(["" if drop else t for t, drop in zip(batch.texts, drop_all.tolist())])
        context = self.encode_context(batch, keep=~(drop_all | drop_ctx).to(self.network_device))
        # 2. the stage's own inputs (SR: the noise-augmented low-resolution image and its level)
        inputs = self.stage_inputs(batch, generator)
        # 3. the v-objective on the target
        return v_loss(
            lambda x_t, t: self.denoise(x_t, t, text, text_mask, context, *inputs),
            self.scheduler,
            batch.target,
            generator,
            snr_gamma,
        )

    def training_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor | None:
        loss = self.loss(batch, dropout=True, snr_gamma=self.hparams.get("snr_gamma"))
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
        generator = torch.Generator().manual_seed(batch_idx)  # the same noise and timesteps every validation
        loss = self.loss(batch, dropout=False, generator=generator)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def test_step(self, batch: InstructionBatch, batch_idx: int) -> torch.Tensor:
        return self.validation_step(batch, batch_idx)

    def configure_optimizers(self) -> dict[str, Any]:
        context_prefix = self.weight_prefixes()[1]
        trained = [(name, p) for name, p in self.named_parameters() if p.requires_grad]
        return self.optimizer_spec.build(
            (p for name, p in trained if not name.startswith(context_prefix)),
            (p for name, p in trained if name.startswith(context_prefix)),
        )

    def on_fit_start(self) -> None:
        trainable, total = count_parameters(self)
        what = (
            f"LoRA rank {self.hparams.lora['rank']} on {count_lora_layers(self.model)} layers"
            if self.lora_config
            else "full"
        )
        rank_zero_info(f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%, {what})")
        self.compile_network()

    # ----------------------------------------------------------------------------------------------- generation
    def default_sampler(self) -> Sampler:
        """`ddpm` on the training schedule with this stage's own step count and guidance scale."""
        steps, scale = self.hparams.sample_steps, self.hparams.guidance_scale
        return make_sampler("ddpm", self.scheduler, default_steps=steps, default_guidance_scale=scale)

    def collate(self, instructions: InstructionBatch | list[Instruction]) -> InstructionBatch:
        """A batch on this stage's device; instructions are resized to `image_size` first."""
        if isinstance(instructions, InstructionBatch):
            return instructions.to(self.network_device)
        size = self.hparams.image_size
        batch = collate_instructions([i.resized(size) for i in instructions], image_size=(size, size))
        return batch.to(self.network_device)

    @torch.no_grad()
    def guided_sample(
        self,
        batch: InstructionBatch,
        sampler: Sampler,
        generator: torch.Generator,
        inputs: tuple[torch.Tensor, ...] = (),
    ) -> torch.Tensor:
        """The reverse process for a batch under classifier-free guidance (`zoo.diffusion.sampler`).

        Args:
            inputs: the stage's own network inputs, (B, ...) each, the same in every branch and step.

        Returns:
            images (B, 3, image_size, image_size) in [-1, 1].
        """
        self.compile_network()
        b = len(batch)
        dtype = self.network_dtype
        # 1. conditions, once: payload text, the null text, and the context tokens
        text, text_mask = self.encode_text(batch.texts)
        null_text, null_mask = self.encode_text([""] * b)
        context = self.encode_context(batch)
        no_context = (
            None if context is None else ContextTokens(context.tokens, torch.zeros_like(context.mask), context.cells)
        )
        branches = {
            "full": (text, text_mask, context),
            "text": (text, text_mask, no_context),
            "null": (null_text, null_mask, no_context),
        }

        # 2. one batched network call per step for all requested branches (the stage's inputs are never dropped)
        joined: dict[tuple[str, ...], tuple] = {}  # each branch combination's conditions, concatenated once

        def model_fn(x_t: torch.Tensor, t: torch.Tensor, names: tuple[str, ...]) -> list[torch.Tensor]:
            n = len(names)
            if names not in joined:
                parts = [branches[name] for name in names]
                joined[names] = (
                    torch.cat([p[0] for p in parts]),
                    torch.cat([p[1] for p in parts]),
                    None if context is None else ContextTokens.cat([p[2] for p in parts]),
                    *(torch.cat([x.to(dtype) if x.is_floating_point() else x] * n) for x in inputs),
                )
            # the network runs in its own dtype; the sampler's state stays in x_t's
            v = self.denoise(torch.cat([x_t.to(dtype)] * n), torch.cat([t] * n), *joined[names]).to(x_t.dtype)
            # A learned-variance UNet (DeepFloyd IF: out_channels = 2 × in_channels) also predicts a variance; the
            # fixed-variance schedule uses the first half only, as diffusers' IFPipeline does.
            return list(v[:, : x_t.shape[1]].chunk(n))

        # 3. the reverse process
        size = self.hparams.image_size
        noise = torch.randn(b, IMAGE_CHANNELS, size, size, generator=generator).to(self.network_device)
        return sample(model_fn, sampler.scheduler, noise, sampler.num_inference_steps, sampler.guidance, generator)

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
        unet_prefix, context_prefix = self.weight_prefixes()
        self.init_report = load_weights(self, path, dict(self.model.unet.config), unet_prefix, context_prefix)
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


def compile_backbone(unet: nn.Module, device: torch.device) -> None:
    """`torch.compile` of `unet` in place (`nn.Module.compile`: its state-dict keys stay the same, and the forward
    hooks of its submodules, the context layers', are traced with it). Compilation itself happens on the first call.

    Raises:
        ValueError: in one line, where the default backend (inductor) cannot compile for `device`: dynamo unsupported
            on this Python or platform, no triton for a CUDA device, no C++ compiler for the CPU.
    """
    import torch._dynamo
    from torch.utils._triton import has_triton

    if not torch._dynamo.is_dynamo_supported():
        reason = "torch.compile is not supported on this Python/platform"
    elif device.type == "cuda" and not has_triton():
        reason = "torch.compile for CUDA needs triton, which is not installed"
    elif device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        reason = "torch.compile on CPU needs a C++ compiler (g++ or clang++), none is on PATH"
    else:
        unet.compile()
        return
    raise ValueError(f"model.compile: {reason}; set model.compile false to train uncompiled")


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
