"""Tests of the super-resolution stage: the UNet's SR form (IF-II's 6 input channels and timestep class embedding),
shapes through training and sampling, noise conditioning augmentation, the optional context reading, and errors."""

from __future__ import annotations

import pytest
import torch
from conftest import IMAGE_SIZE, SR_SIZE, build_sr
from diffusers import UNet2DConditionModel

from zoo.diffusion.schedule import alpha_sigma
from zoo.instruction import collate_instructions
from zoo.models.sr_unet import SuperResUNet, downsample, sr_unet_config, upsample


@pytest.fixture(scope="module")
def sr_model():
    return build_sr().eval()


@pytest.fixture
def sr_batch(task_instructions):
    return collate_instructions([i.resized(SR_SIZE) for i in task_instructions])


def test_sr_config_mirrors_deepfloyd_if_stage_two() -> None:
    config = sr_unet_config("tiny", 64)
    assert config["in_channels"] == 6 and config["out_channels"] == 3
    assert config["class_embed_type"] == "timestep" and config["sample_size"] == 64
    unet = UNet2DConditionModel(**config)
    assert unet.class_embedding is not None
    if_style = dict(config, in_channels=6)  # an already-SR config is kept
    assert sr_unet_config(if_style, 64) == config


@pytest.mark.parametrize(
    "bad, field", [({"in_channels": 4}, "in_channels"), ({"class_embed_type": "identity"}, "class_embed_type")]
)
def test_sr_config_errors_name_the_field(bad: dict, field: str) -> None:
    from zoo.models.presets import resolve_unet_config

    with pytest.raises(ValueError, match=field):
        sr_unet_config({**resolve_unet_config("tiny"), **bad}, 32)


def test_sr_module_rejects_bad_sizes_and_levels() -> None:
    with pytest.raises(ValueError, match="lowres_size"):
        build_sr(lowres_size=SR_SIZE)
    with pytest.raises(ValueError, match="lowres_sample_noise_level"):
        build_sr(lowres_sample_noise_level=1.5)


def test_down_and_up_sampling_shapes() -> None:
    x = torch.rand(2, 3, SR_SIZE, SR_SIZE) * 2 - 1
    low = downsample(x, IMAGE_SIZE)
    assert low.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    up = upsample(low, SR_SIZE)
    assert up.shape == x.shape
    flat = torch.full((1, 3, IMAGE_SIZE, IMAGE_SIZE), 0.25)
    torch.testing.assert_close(upsample(flat, SR_SIZE), torch.full((1, 3, SR_SIZE, SR_SIZE), 0.25))


def test_noise_augmentation_level_zero_is_the_upsampled_image_and_levels_add_noise(sr_model) -> None:
    low = torch.rand(64, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1
    clean = sr_model.noise_augment(low, torch.zeros(64, dtype=torch.long))
    alpha0, sigma0 = alpha_sigma(sr_model.scheduler, torch.zeros(1, dtype=torch.long), 4)
    torch.testing.assert_close(clean, alpha0 * upsample(low, SR_SIZE), atol=sigma0.item() * 6, rtol=0)
    for level in (200, 600):
        t = torch.full((64,), level)
        noisy = sr_model.noise_augment(low, t, torch.Generator().manual_seed(0))
        alpha, sigma = alpha_sigma(sr_model.scheduler, t[:1], 4)
        residual = noisy - alpha * upsample(low, SR_SIZE)
        assert abs(residual.std().item() - sigma.item()) < 0.02 * max(sigma.item(), 0.1)  # q(z | x) = N(αx, σ²I)
        assert abs(residual.mean().item()) < 0.01


def test_training_levels_cover_the_configured_range() -> None:
    model = build_sr(lowres_max_noise_level=0.5)
    levels = model.augmentation_levels(5000, torch.Generator().manual_seed(0))
    assert levels.min() >= 0 and levels.max() <= round(0.5 * 999)
    assert levels.max() > 400 and levels.float().std() > 100  # spread over the range, not one value


def test_sr_unet_is_conditioned_on_the_noise_level(sr_model, sr_batch) -> None:
    b = len(sr_batch)
    x, low = torch.randn(b, 3, SR_SIZE, SR_SIZE), torch.randn(b, 3, SR_SIZE, SR_SIZE)
    text, mask = sr_model.encode_text(sr_batch.texts)
    t = torch.full((b,), 500)
    with torch.no_grad():
        a = sr_model.model(x, t, low, torch.zeros(b, dtype=torch.long), text, mask)
        c = sr_model.model(x, t, low, torch.full((b,), 900), text, mask)
        d = sr_model.model(x, t, low + 1, torch.zeros(b, dtype=torch.long), text, mask)
    assert a.shape == (b, 3, SR_SIZE, SR_SIZE)
    assert (a - c).abs().max() > 1e-4  # the level reaches the network
    assert (a - d).abs().max() > 1e-4  # so does the low-resolution image


def test_sr_training_step_and_validation_are_finite_and_reproducible(sr_batch) -> None:
    model = build_sr()
    loss = model.training_step(sr_batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.model.unet.class_embedding.linear_1.weight.grad is not None  # the level embedding learns
    model.eval()
    with torch.no_grad():
        assert model.validation_step(sr_batch, 3) == model.validation_step(sr_batch, 3)


def test_sr_generate_shapes_range_and_determinism(sr_model, task_instructions) -> None:
    from zoo.diffusion.samplers import make_sampler

    low = torch.rand(3, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1
    a = sr_model.generate(
        task_instructions, low, make_sampler("ddpm", sr_model.scheduler, num_inference_steps=3), seed=1
    )
    b = sr_model.generate(
        task_instructions, low, make_sampler("ddpm", sr_model.scheduler, num_inference_steps=3), seed=1
    )
    assert a.shape == (3, 3, SR_SIZE, SR_SIZE) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="low-resolution"):
        sr_model.generate(task_instructions, low[:2])


def test_sr_reading_context_is_optional_and_starts_as_the_text_only_model(sr_batch) -> None:
    plain, reader = build_sr(), build_sr(read_context=True)
    assert plain.encode_context(sr_batch) is None
    assert not any("context_layers" in k for k in plain.state_dict())
    assert any("context_layers" in k for k in reader.state_dict())
    reader.model.unet.load_state_dict(plain.model.unet.state_dict())
    b = len(sr_batch)
    x, low, t, level = (
        torch.randn(b, 3, SR_SIZE, SR_SIZE),
        torch.randn(b, 3, SR_SIZE, SR_SIZE),
        torch.full((b,), 300),
        torch.full((b,), 100),
    )
    text, mask = plain.encode_text(sr_batch.texts)
    with torch.no_grad():
        context = reader.encode_context(sr_batch)
        assert context.tokens.shape[0] == b and context.mask.any()
        with_context = reader.model(x, t, low, level, text, mask, context)
        without = plain.model(x, t, low, level, text, mask)
    torch.testing.assert_close(with_context, without, atol=1e-5, rtol=0)  # zero-init context layers
    loss = reader.training_step(sr_batch, 0)
    loss.backward()
    with pytest.raises(ValueError, match="read_context"):
        plain.model(x, t, low, level, text, mask, context)


def test_sr_unet_refuses_a_plain_backbone() -> None:
    from zoo.models.presets import resolve_unet_config

    with pytest.raises(ValueError, match="in_channels"):
        SuperResUNet(UNet2DConditionModel(**resolve_unet_config("tiny")))


# ------------------------------------------------------------------------------------------ (init_from) start weights
@pytest.mark.parametrize("read_context", [False, True])
def test_sr_init_from_a_diffusers_folder_round_trips(tmp_path, sr_batch, read_context: bool) -> None:
    """An SR UNet saved in diffusers format (as IF-II's is) starts a new SR stage: same weights, same outputs; when the
    stage also reads the context, its new context layers are the only keys the folder lacks."""
    source = build_sr(seed=1, read_context=read_context).eval()
    source.model.unet.save_pretrained(tmp_path / "unet")
    loaded = build_sr(seed=2, read_context=read_context, init_from=str(tmp_path / "unet")).eval()
    assert loaded.init_report.kind == "diffusers"
    expected_new = len(loaded.model.net.context_layers) if read_context else 0
    assert len({key.split(".")[3] for key in loaded.init_report.new_keys}) == expected_new
    for name, value in source.model.unet.state_dict().items():
        assert torch.equal(loaded.model.unet.state_dict()[name], value), name
    x = torch.randn(len(sr_batch), 3, SR_SIZE, SR_SIZE, generator=torch.Generator().manual_seed(0))
    lowres = upsample(downsample(sr_batch.target, IMAGE_SIZE), SR_SIZE)
    t, level = torch.full((len(sr_batch),), 500), torch.zeros(len(sr_batch), dtype=torch.long)
    text, mask = source.encode_text(sr_batch.texts)
    with torch.no_grad():
        assert torch.equal(source.model(x, t, lowres, level, text, mask), loaded.model(x, t, lowres, level, text, mask))


def test_sr_init_from_a_base_stage_folder_is_refused_naming_the_fields(tmp_path) -> None:
    UNet2DConditionModel(**sr_unet_config("tiny", SR_SIZE) | {"block_out_channels": (16, 64)}).save_pretrained(
        tmp_path / "other"
    )
    with pytest.raises(ValueError, match="block_out_channels"):
        build_sr(init_from=str(tmp_path / "other"))
