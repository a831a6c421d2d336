"""Tests of the named samplers: each is the diffusers scheduler it names, our loop equals a hand-written loop of
`scheduler.step` (toy function exactly, the tiny model's guided generation to float tolerance), the paper's
setting, oscillation, and separate text/context scales; the guided loop's own formulas and settings on a toy
function."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import IMAGE_SIZE, build_tiny_model, perturb_context_layers, toy_model_fn
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from zoo.diffusion.sampler import Guidance, guided_prediction, sample
from zoo.diffusion.samplers import SAMPLERS, make_sampler
from zoo.diffusion.schedule import make_scheduler


def manual_loop(scheduler, noise, steps, predict, seed):
    """The loop a diffusers pipeline writes: set_timesteps, scale_model_input, model, step."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    kwargs = {"generator": generator} if isinstance(scheduler, (DDPMScheduler, DPMSolverMultistepScheduler)) else {}
    for i, t in enumerate(scheduler.timesteps):
        v = predict(scheduler.scale_model_input(x, t), t.expand(x.shape[0]), i)
        x = scheduler.step(v, t, x, **kwargs).prev_sample
    return x.clamp(-1, 1)


@pytest.mark.parametrize("name", SAMPLERS)
def test_named_sampler_loop_equals_manual_scheduler_steps(name: str) -> None:
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fn = toy_model_fn()
    chosen = make_sampler(name, make_scheduler(), num_inference_steps=7, guidance_scale=4.0)
    got = sample(
        fn, chosen.scheduler, noise, chosen.num_inference_steps, chosen.guidance, torch.Generator().manual_seed(3)
    )

    def guided(x, t, i):
        v_full, v_null = fn(x, t, ("full", "null"))
        if chosen.guidance.oscillate and i % 2 == 1:
            return v_full
        return v_null + 4.0 * (v_full - v_null)

    fresh = make_sampler(name, make_scheduler()).scheduler
    expected = manual_loop(fresh, noise, 7, guided, 3)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_samplers_are_the_diffusers_schedulers_on_the_training_schedule() -> None:
    training = make_scheduler()
    kinds = {name: make_sampler(name, training).scheduler for name in SAMPLERS}
    assert type(kinds["paper"]) is DDPMScheduler and type(kinds["ddpm"]) is DDPMScheduler
    assert type(kinds["dpmsolver++"]) is DPMSolverMultistepScheduler
    assert kinds["dpmsolver++"].config.algorithm_type == "dpmsolver++"
    assert type(kinds["sde-dpmsolver++"]) is DPMSolverMultistepScheduler
    assert kinds["sde-dpmsolver++"].config.algorithm_type == "sde-dpmsolver++"
    assert type(kinds["unipc"]) is UniPCMultistepScheduler
    for scheduler in kinds.values():
        assert scheduler is not training
        assert scheduler.config.prediction_type == "v_prediction"
        assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
        assert scheduler.config.thresholding  # Imagen's dynamic thresholding in every solver
        torch.testing.assert_close(scheduler.alphas_cumprod, training.alphas_cumprod)


def test_paper_setting_is_256_ddpm_steps_with_oscillating_guidance_25() -> None:
    paper = make_sampler("paper", make_scheduler())
    assert paper.num_inference_steps == 256
    assert paper.guidance == Guidance(scale=25.0, oscillate=True)
    paper.scheduler.set_timesteps(256)
    assert len(paper.scheduler.timesteps) == 256
    assert paper.scheduler.timesteps[0] == 999  # starts from pure noise ("trailing" spacing)


def test_fast_solvers_take_25_steps_and_the_models_own_scale() -> None:
    for name in ("dpmsolver++", "sde-dpmsolver++", "unipc"):
        chosen = make_sampler(name, make_scheduler(), default_guidance_scale=4.5)
        assert chosen.num_inference_steps == 25 and chosen.guidance == Guidance(scale=4.5)
    ddpm = make_sampler("ddpm", make_scheduler(), default_steps=12, default_guidance_scale=2.0)
    assert ddpm.num_inference_steps == 12 and ddpm.guidance == Guidance(scale=2.0)


def test_overrides_and_separate_context_scale() -> None:
    chosen = make_sampler("paper", make_scheduler(), num_inference_steps=10, guidance_scale=5.0, context_scale=2.0)
    assert chosen.num_inference_steps == 10
    assert chosen.guidance == Guidance(scale=5.0, context_scale=2.0, oscillate=True)


def test_oscillation_alternates_three_branches_and_none() -> None:
    calls: list[tuple[str, ...]] = []
    chosen = make_sampler("paper", make_scheduler(), num_inference_steps=4, context_scale=2.0)
    sample(toy_model_fn(calls), chosen.scheduler, torch.randn(1, 3, 4, 4), 4, chosen.guidance)
    assert calls == [("full", "text", "null"), ("full",), ("full", "text", "null"), ("full",)]


def test_unknown_sampler_and_bad_steps_are_named() -> None:
    with pytest.raises(ValueError, match="euler"):
        make_sampler("euler", make_scheduler())
    with pytest.raises(ValueError, match="num_inference_steps"):
        make_sampler("unipc", make_scheduler(), num_inference_steps=0)


# ------------------------------------------------------------------------------- the tiny model, guided generation
@pytest.fixture(scope="module")
def context_reading_model():
    """The tiny model with non-zero context layers: v_full differs from v_text, so the context scale shows."""
    model = build_tiny_model()
    perturb_context_layers(model.model)
    return model.eval()


@pytest.mark.parametrize("name", ["dpmsolver++", "paper"])
def test_generate_equals_a_manual_loop_over_the_tiny_model(context_reading_model, task_instructions, name: str) -> None:
    tiny_model = context_reading_model
    chosen = make_sampler(name, tiny_model.scheduler, num_inference_steps=4, guidance_scale=3.0, context_scale=2.0)
    got = tiny_model.generate(
        task_instructions, chosen.num_inference_steps, chosen.guidance, seed=11, scheduler=chosen.scheduler
    )

    # by hand: each branch its own network call, then the two-scale formula
    from zoo.instruction import collate_instructions

    batch = collate_instructions(task_instructions)
    b = len(batch)
    with torch.no_grad():
        text, mask = tiny_model.encode_text(batch.texts)
        null, null_mask = tiny_model.encode_text([""] * b)
        context = tiny_model.encode_context(batch)

        def predict(x, t, i):
            v_full = tiny_model.model(x, t, text, mask, context)
            if i % 2 == 1 and name == "paper":
                return v_full
            v_text = tiny_model.model(x, t, text, mask, None)
            v_null = tiny_model.model(x, t, null, null_mask, None)
            return v_null + 3.0 * (v_text - v_null) + 2.0 * (v_full - v_text)

        generator = torch.Generator().manual_seed(11)
        noise = torch.randn(b, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        scheduler = make_sampler(name, tiny_model.scheduler).scheduler
        scheduler.set_timesteps(4)
        x = noise * scheduler.init_noise_sigma
        for i, t in enumerate(scheduler.timesteps):
            v = predict(scheduler.scale_model_input(x, t), t.expand(b), i)
            x = scheduler.step(v, t, x, generator=generator).prev_sample
    torch.testing.assert_close(got, x.clamp(-1, 1), atol=2e-5, rtol=0)
    # the comparison can see a wrong context scale: another one moves the samples far beyond the tolerance
    other = replace(chosen.guidance, context_scale=1.0)
    wrong = tiny_model.generate(
        task_instructions, 4, other, seed=11, scheduler=make_sampler(name, tiny_model.scheduler).scheduler
    )
    assert (wrong - got).abs().max() > 1e-2


# -------------------------------------------------------------------------------- the guided loop on a toy function
@pytest.mark.parametrize("thresholding", [False, True])
def test_sampler_loop_matches_manual_ddpm_steps(thresholding: bool) -> None:
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fn = toy_model_fn()
    generator = torch.Generator().manual_seed(5)
    got = sample(fn, make_scheduler(thresholding=thresholding), noise, 6, Guidance(scale=1.0), generator)
    expected = manual_loop(
        make_scheduler(thresholding=thresholding), noise, 6, lambda x, t, i: fn(x, t, ("full",))[0], 5
    )
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_sampler_loop_matches_a_plain_ddpm_scheduler() -> None:
    config = dict(num_train_timesteps=100, prediction_type="v_prediction", beta_schedule="linear")
    noise = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    fn = toy_model_fn()
    got = sample(fn, DDPMScheduler(**config), noise, 10, Guidance(scale=1.0), torch.Generator().manual_seed(1))
    expected = manual_loop(DDPMScheduler(**config), noise, 10, lambda x, t, i: fn(x, t, ("full",))[0], 1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_scale_one_is_the_conditional_only_path() -> None:
    calls: list[tuple[str, ...]] = []
    fn = toy_model_fn(calls)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    got = sample(fn, make_scheduler(), noise, 4, Guidance(scale=1.0), torch.Generator().manual_seed(0))
    assert calls == [("full",)] * 4  # never asks for the unconditional branches
    expected = manual_loop(make_scheduler(), noise, 4, lambda x, t, i: fn(x, t, ("full",))[0], 0)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_guided_prediction_formulas() -> None:
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([500, 500])
    fn = toy_model_fn()
    v_full, v_text, v_null = fn(x, t, ("full", "text", "null"))
    torch.testing.assert_close(guided_prediction(fn, x, t, Guidance(scale=4.0)), v_null + 4.0 * (v_full - v_null))
    torch.testing.assert_close(
        guided_prediction(fn, x, t, Guidance(scale=2.0, context_scale=3.0)),
        v_null + 2.0 * (v_text - v_null) + 3.0 * (v_full - v_text),
    )
    torch.testing.assert_close(guided_prediction(fn, x, t, Guidance(scale=4.0), guided=False), v_full)


def test_oscillating_guidance_alternates_starting_guided() -> None:
    calls: list[tuple[str, ...]] = []
    sample(toy_model_fn(calls), make_scheduler(), torch.randn(1, 3, 4, 4), 5, Guidance(scale=25.0, oscillate=True))
    assert calls == [("full", "null"), ("full",), ("full", "null"), ("full",), ("full", "null")]


def test_sampler_and_guidance_reject_bad_settings() -> None:
    with pytest.raises(ValueError, match="num_inference_steps"):
        sample(toy_model_fn(), make_scheduler(), torch.randn(1, 3, 4, 4), 0)
    with pytest.raises(ValueError, match="scale"):
        Guidance(scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        Guidance(scale=1.0, context_scale=-2.0)
