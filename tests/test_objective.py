"""Tests of the training objective's math: condition dropout (paper §2.4's two situations) and the forward process
(`q_sample`, `v`) against diffusers' own."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_model

from zoo.diffusion.objective import condition_dropout
from zoo.diffusion.schedule import make_scheduler, q_sample, velocity


# ------------------------------------------------------------------------------------------- condition dropout
def test_condition_dropout_situations_are_disjoint_at_their_rates() -> None:
    g = torch.Generator().manual_seed(0)
    drop_all, drop_ctx = condition_dropout(20_000, 0.1, 0.1, generator=g)
    assert drop_all.dtype == torch.bool and drop_all.shape == drop_ctx.shape == (20_000,)
    assert not (drop_all & drop_ctx).any()
    assert abs(drop_all.float().mean().item() - 0.1) < 0.01
    assert abs(drop_ctx.float().mean().item() - 0.1) < 0.01
    assert abs((drop_all | drop_ctx).float().mean().item() - 0.2) < 0.015


def test_condition_dropout_extremes() -> None:
    drop_all, drop_ctx = condition_dropout(1000, 0.0, 0.0)
    assert not drop_all.any() and not drop_ctx.any()
    drop_all, drop_ctx = condition_dropout(1000, 0.0, 1.0)
    assert not drop_all.any() and drop_ctx.all()
    drop_all, drop_ctx = condition_dropout(1000, 1.0, 0.0)
    assert drop_all.all() and not drop_ctx.any()


@pytest.mark.parametrize("p_all, p_ctx", [(-0.1, 0.1), (0.1, -0.1), (0.6, 0.5), (1.5, 0.0)])
def test_condition_dropout_rejects_invalid_probabilities(p_all: float, p_ctx: float) -> None:
    with pytest.raises(ValueError, match="drop"):
        condition_dropout(4, p_all, p_ctx)
    with pytest.raises(ValueError, match="drop"):
        build_tiny_model(drop_text_and_context=p_all, drop_context=p_ctx)


# --------------------------------------------------------------------------------------- the forward process
def test_q_sample_and_velocity_match_diffusers() -> None:
    scheduler = make_scheduler()
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(6, 3, 8, 8, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    tol = dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q_sample(scheduler, x0, t, eps), scheduler.add_noise(x0, eps, t), **tol)
    torch.testing.assert_close(velocity(scheduler, x0, t, eps), scheduler.get_velocity(x0, eps, t), **tol)


def test_velocity_and_q_sample_recover_x0_and_eps() -> None:
    scheduler = make_scheduler(num_train_timesteps=100)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    t = torch.tensor([0, 10, 50, 99])
    x_t, v = q_sample(scheduler, x0, t, eps), velocity(scheduler, x0, t, eps)
    alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    torch.testing.assert_close(alpha * x_t - sigma * v, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sigma * x_t + alpha * v, eps, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------- min-SNR-γ weighting
def test_min_snr_weight_is_min_snr_gamma_over_snr_plus_one() -> None:
    from zoo.diffusion.objective import min_snr_weight

    scheduler = make_scheduler()
    t = torch.tensor([0, 100, 300, 500, 700, 999])
    alpha_bar = scheduler.alphas_cumprod[t].double()
    snr = alpha_bar / (1 - alpha_bar)
    expected = torch.minimum(snr, torch.full_like(snr, 5.0)) / (snr + 1)
    torch.testing.assert_close(min_snr_weight(scheduler, t, 5.0).double(), expected, rtol=1e-4, atol=1e-7)
    weight = min_snr_weight(scheduler, torch.arange(1000), 5.0)
    # low noise (large SNR) weighs γ / SNR, far below the mid-range; no weight exceeds 1
    assert weight.max() <= 1 and weight[0] < 1e-3 < weight[300] and weight.argmax() < 500


def test_v_loss_with_snr_gamma_weights_each_sample() -> None:
    from zoo.diffusion.objective import min_snr_weight, v_loss

    scheduler = make_scheduler()
    x0 = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x_t)  # the loss is then |v|² per sample

    plain = v_loss(model_fn, scheduler, x0, torch.Generator().manual_seed(1))
    weighted = v_loss(model_fn, scheduler, x0, torch.Generator().manual_seed(1), snr_gamma=5.0)
    # same t and noise, so the same per-sample errors: the weighted loss is their weighted mean
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (8,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    per_sample = velocity(scheduler, x0, t, eps).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(plain, per_sample.mean())
    torch.testing.assert_close(weighted, (per_sample * min_snr_weight(scheduler, t, 5.0)).mean())
    assert not torch.allclose(plain, weighted)


def test_snr_gamma_weights_training_only_and_is_checked(task_instructions) -> None:
    model = build_tiny_model(snr_gamma=5.0)
    batch = model.collate(task_instructions)

    def seeded(fn, *args, **kwargs) -> torch.Tensor:
        torch.manual_seed(0)  # the same dropout, timesteps and noise for each call
        with torch.no_grad():
            return fn(*args, **kwargs)

    trained = seeded(model.training_step, batch, 0)
    torch.testing.assert_close(trained, seeded(model.loss, batch, dropout=True, snr_gamma=5.0))
    assert not torch.allclose(trained, seeded(model.loss, batch, dropout=True))
    # validation reports the plain loss, comparable across runs with and without the weighting
    validated = model.validation_step(batch, 0)
    torch.testing.assert_close(validated, model.loss(batch, dropout=False, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="snr_gamma must be > 0"):
        build_tiny_model(snr_gamma=0.0)
