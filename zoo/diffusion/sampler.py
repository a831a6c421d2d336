"""Sampling: the reverse-diffusion loop over any diffusers scheduler, with classifier-free guidance.

The model is an argument: `model_fn(x_t, t, branches) -> [v per branch]`, where a branch names which conditions
are kept — "full" (text + context), "text" (context dropped) or "null" (both dropped), the three situations the
training dropout teaches (arXiv 2401.01952 §2.4). The caller batches the branches into one network call.

Guidance (Ho & Salimans 2022), with separate scales for text and context when `context_scale` is set:
    v = v_null + w_text (v_text - v_null) + w_ctx (v_full - v_text)
and with one scale w otherwise: v = v_null + w (v_full - v_null).
The paper's setting is DDPM, 256 steps, and *oscillating* guidance: "alternating between a guidance at the scale
of 25.0 and no guidance every consecutive step" (§2.4); `oscillate=True` does that, and its unguided steps cost
one branch instead of two.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from diffusers import SchedulerMixin

ModelFn = Callable[[torch.Tensor, torch.Tensor, Sequence[str]], list[torch.Tensor]]


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance settings.

    Args:
        scale: w (or w_text when `context_scale` is set); 1.0 means no guidance.
        context_scale: w_ctx, a separate scale for the context; None uses the single-scale form.
        oscillate: alternate guided and unguided steps, starting guided (the paper's schedule).
    """

    scale: float = 5.0
    context_scale: float | None = None
    oscillate: bool = False

    def __post_init__(self) -> None:
        if self.scale < 0 or (self.context_scale is not None and self.context_scale < 0):
            raise ValueError(f"guidance scales must be ≥ 0; got scale={self.scale}, context_scale={self.context_scale}")


def guided_prediction(
    model_fn: ModelFn, x_t: torch.Tensor, t: torch.Tensor, guidance: Guidance, guided: bool = True
) -> torch.Tensor:
    """One guided model evaluation (see the module docstring for the formula)."""
    if not guided or (guidance.scale == 1.0 and guidance.context_scale is None):
        (v_full,) = model_fn(x_t, t, ("full",))
        return v_full
    if guidance.context_scale is None:
        v_full, v_null = model_fn(x_t, t, ("full", "null"))
        return v_null + guidance.scale * (v_full - v_null)
    v_full, v_text, v_null = model_fn(x_t, t, ("full", "text", "null"))
    return v_null + guidance.scale * (v_text - v_null) + guidance.context_scale * (v_full - v_text)


@torch.no_grad()
def sample(
    model_fn: ModelFn,
    scheduler: SchedulerMixin,
    noise: torch.Tensor,
    num_inference_steps: int,
    guidance: Guidance = Guidance(),
    generator: torch.Generator | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Runs the reverse process from `noise` (B, C, H, W) to x_0, clamped to [-1, 1].

    `scheduler` is any diffusers scheduler configured for v-prediction (DDPM for the paper's setting, DPM-Solver++
    or UniPC for 20–30 steps); its `step` does the update and, if configured, dynamic thresholding.
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be ≥ 1, got {num_inference_steps}")
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    # Only stochastic steps take a generator (DDPM does, UniPC does not): pass it where `step` accepts it.
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    x = noise * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        guided = not guidance.oscillate or i % 2 == 0
        x_in = scheduler.scale_model_input(x, t)
        v = guided_prediction(model_fn, x_in, t.expand(x.shape[0]), guidance, guided)
        x = scheduler.step(v, t, x, **step_kwargs).prev_sample
        if progress is not None:
            progress(i + 1, num_inference_steps)
    return x.clamp(-1, 1)
