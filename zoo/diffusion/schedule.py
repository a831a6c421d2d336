"""The noise schedule: a diffusers scheduler configured as the paper trains (arXiv 2401.01952 §2.4, §3.1).

"DDPM and cosine noise schedule" with v-prediction. `q_sample` and `velocity` are the forward process written with
the paper's names: x_t = alpha_t x_0 + sigma_t eps and v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022, §4).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler


def make_scheduler(num_train_timesteps: int = 1000, thresholding: bool = True) -> DDPMScheduler:
    """The training/sampling schedule: cosine ("squaredcos_cap_v2"), v-prediction, no clipping.

    `thresholding` turns on Imagen's dynamic thresholding in `step` (arXiv 2205.11487 §2.3): "at each sampling step
    we set s to a certain percentile absolute pixel value in x̂_0^t, and if s > 1, then we threshold x̂_0^t to the
    range [-s, s] and then divide by s" (diffusers' `_threshold_sample`, percentile 0.995).

    Sampling timesteps are spaced "trailing", so every step count starts at t = T - 1 (with diffusers' default
    "leading" spacing, 256 of 1000 steps would start at t = 765, never from pure noise; Lin et al. 2023, §3.3).
    """
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        clip_sample=False,
        thresholding=thresholding,
        dynamic_thresholding_ratio=0.995,
        sample_max_value=1.0,
        timestep_spacing="trailing",
    )


def alpha_sigma(scheduler: DDPMScheduler, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t), shaped to broadcast over `ndim` dims."""
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t].float()
    shape = (-1,) + (1,) * (ndim - 1)
    return alpha_bar.sqrt().view(shape), (1 - alpha_bar).sqrt().view(shape)


def q_sample(scheduler: DDPMScheduler, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Sample q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)."""
    alpha, sigma = alpha_sigma(scheduler, t, x0.ndim)
    return alpha * x0 + sigma * eps


def velocity(scheduler: DDPMScheduler, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The v-prediction target v = alpha_t eps - sigma_t x_0."""
    alpha, sigma = alpha_sigma(scheduler, t, x0.ndim)
    return alpha * eps - sigma * x0
