"""The training objective: v-prediction with the standard L2 loss (arXiv 2401.01952 App. A.2.2), and the two
condition-dropout modes that make classifier-free guidance possible (§2.4: "two independent drop situations: (1)
dropping both the input text and multi-modal context; and (2) dropping only the multi-modal context, each dropout
situation occurs at 10% chance")."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from zoo.diffusion.schedule import q_sample, velocity


def condition_dropout(
    batch_size: int, drop_text_and_context: float, drop_context: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws which samples lose their conditions. The two situations are disjoint, so each has its stated chance.

    Returns:
        drop_all (B,) bool: text and context both dropped (the unconditional branch of guidance);
        drop_ctx (B,) bool: context dropped, text kept (teaches plain text-to-image).
    """
    if drop_text_and_context < 0 or drop_context < 0 or drop_text_and_context + drop_context > 1:
        raise ValueError(
            f"dropout probabilities must be ≥ 0 and sum to ≤ 1; got drop_text_and_context={drop_text_and_context}, "
            f"drop_context={drop_context}"
        )
    u = torch.rand(batch_size, generator=generator)
    drop_all = u < drop_text_and_context
    drop_ctx = (u >= drop_text_and_context) & (u < drop_text_and_context + drop_context)
    return drop_all, drop_ctx


def min_snr_weight(scheduler: DDPMScheduler, t: torch.Tensor, snr_gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights for the v-objective (Hang et al. 2023, arXiv 2303.09556): min(SNR_t, γ) / (SNR_t + 1),
    as diffusers' training scripts apply it (`--snr_gamma`, with SNR_t = alpha_t² / sigma_t² from `compute_snr`).

    Returns: (B,) weights in (0, 1]: the low-noise steps weigh γ / (SNR_t + 1) and, for v, the noisiest about SNR_t,
    so the weight sits on the middle of the schedule (docs/learning.md, lever 13).
    """
    snr = compute_snr(scheduler, t)
    return snr.clamp(max=snr_gamma) / (snr + 1)


def v_loss(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """E_{t, eps} || v_theta(x_t, t) - v ||^2 with t uniform over the training timesteps.

    Args:
        model_fn: (x_t (B, C, H, W), t (B,)) → predicted v; it closes over the conditions.
        x0: (B, C, H, W) clean targets in [-1, 1].
        snr_gamma: weight each sample by `min_snr_weight` (None: the paper's plain L2).
    """
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(x0.device)
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    x_t = q_sample(scheduler, x0, t, eps)
    v_pred, v = model_fn(x_t, t).float(), velocity(scheduler, x0, t, eps).float()
    if snr_gamma is None:
        return F.mse_loss(v_pred, v)
    per_sample = F.mse_loss(v_pred, v, reduction="none").flatten(1).mean(1)  # (B,)
    return (per_sample * min_snr_weight(scheduler, t, snr_gamma)).mean()
