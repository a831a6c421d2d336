"""Tests of the stage base (`zoo.lit.stage.Stage`) through the super-resolution stage, which gained by inheritance what
only the base stage had: LoRA, the non-finite-loss guard, the text-embedding cache, class_path text encoders, the
checkpoint hooks and the optimizer settings; and its guided sampling is the one loop, checked against a manual one."""

from __future__ import annotations

import pytest
import torch
from conftest import IMAGE_SIZE, SR_SIZE, TEXT_MAX_LENGTH, build_sr, build_tiny_model, perturb_context_layers
from lightning.pytorch import Trainer

import zoo.lit.stage as stage
from zoo.diffusion.samplers import make_sampler
from zoo.instruction import collate_instructions
from zoo.lit.optimizer import OptimizerSpec
from zoo.lit.sr_module import SuperResolution
from zoo.lora import count_parameters
from zoo.models.sr_unet import downsample, upsample
from zoo.models.text import TextEncoder
from zoo.models.text_cache import TextEmbeddingCache

RANK = 4


@pytest.fixture
def sr_batch(task_instructions):
    return collate_instructions([i.resized(SR_SIZE) for i in task_instructions])


def denoise(model: SuperResolution) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, low = torch.randn(2, 3, SR_SIZE, SR_SIZE, generator=g), torch.randn(2, 3, SR_SIZE, SR_SIZE, generator=g)
    text, mask = model.encode_text(["a red circle", "a blue square"])
    with torch.no_grad():
        return model.denoise(x, torch.tensor([10, 500]), text, mask, None, low, torch.tensor([0, 200]))


def save_and_reload(model: SuperResolution, path) -> SuperResolution:
    trainer = Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return SuperResolution.load_from_checkpoint(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------------------- LoRA
def test_sr_lora_trains_only_adapters_on_the_backbone_attention() -> None:
    model = build_sr(lora={"rank": RANK})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert any(".attn2.to_out.0.lora_A" in n for n in trainable)
    # tiny: 4 transformer blocks × 2 attentions × q/k/v/out
    assert len({n.split(".lora_")[0] for n in trainable}) == 32
    assert count_parameters(model)[0] == sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    assert model.hparams.lora["rank"] == RANK  # a plain dict, as checkpoints are read with weights_only=True


def test_sr_lora_reaches_the_context_layers_when_the_stage_reads_the_context() -> None:
    reader = build_sr(read_context=True, lora={"rank": RANK, "targets": "context"})
    layers = {n.split(".lora_")[0] for n, p in reader.named_parameters() if p.requires_grad}
    assert layers and all(".context_layers." in n for n in layers)
    assert len(layers) == 4 * len(reader.model.net.context_layers)
    with pytest.raises(ValueError, match="selects no layer"):  # a text-only SR UNet has no context layers
        build_sr(lora={"rank": RANK, "targets": "context"})


def test_sr_lora_starts_at_the_base_model_and_its_step_moves_only_adapters(sr_batch) -> None:
    plain, adapted = build_sr(), build_sr(lora={"rank": RANK})
    torch.testing.assert_close(denoise(adapted), denoise(plain), atol=1e-6, rtol=0)
    adapted.training_step(sr_batch, 0).backward()
    with_grad = [n for n, p in adapted.named_parameters() if p.grad is not None]
    assert with_grad and all(".lora_" in n for n in with_grad)


def test_sr_lora_survives_a_checkpoint(tmp_path) -> None:
    model = build_sr(lora={"rank": RANK})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B" in name:
                p.fill_(0.05)
    loaded = save_and_reload(model, tmp_path / "sr.ckpt")
    assert loaded.lora_config is not None and loaded.hparams.lora == model.hparams.lora
    torch.testing.assert_close(denoise(loaded), denoise(model), atol=0, rtol=0)


def test_an_sr_adapter_exports_loads_onto_its_base_and_merges(tmp_path) -> None:
    """`lora export` reads which stage a checkpoint holds: an SR run's adapter goes to `sr/`, loads onto the SR base it
    was trained on (and only there), and merges into an adapter-free SR checkpoint with the same outputs."""
    from zoo.adapters.folder import load_adapters
    from zoo.adapters.share import export, merge
    from zoo.checkpoint_io import load_stage

    model = build_sr(lora={"rank": RANK})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B" in name:
                p.fill_(0.05)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, tmp_path / "run.ckpt")
    base = build_sr()
    torch.save({"state_dict": base.state_dict(), "hyper_parameters": dict(base.hparams)}, tmp_path / "base.ckpt")

    folder = export(tmp_path / "run.ckpt", tmp_path / "adapter", num_samples=4)
    assert (folder / "sr" / "adapter_model.safetensors").is_file() and not (folder / "base").exists()
    assert not (folder / "samples").exists()  # the card's samples come from a base stage only
    assert not torch.equal(denoise(base), denoise(model))
    load_adapters(base, [(folder, 1.0)])
    torch.testing.assert_close(denoise(base), denoise(model), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="made for base"):
        load_adapters(build_sr(seed=3), [(folder, 1.0)])

    merged, _ = load_stage(SuperResolution, merge(folder, tmp_path / "base.ckpt", tmp_path / "merged.ckpt"))
    assert merged.lora_config is None
    torch.testing.assert_close(denoise(merged), denoise(model), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ non-finite losses
def test_sr_nonfinite_loss_skips_the_step_then_stops(sr_batch, monkeypatch) -> None:
    model = build_sr(nonfinite_patience=2)
    real = stage.v_loss
    monkeypatch.setattr(stage, "v_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    assert model.training_step(sr_batch, 0) is None  # skipped: no backward, no update
    assert model.nonfinite.total == 1
    with pytest.raises(FloatingPointError, match="2 times in a row"):
        model.training_step(sr_batch, 1)


def test_sr_checkpoint_hooks_refuse_nonfinite_weights_and_keep_the_random_state(tmp_path) -> None:
    model = build_sr()
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert "zoo_rng_state" in checkpoint and checkpoint["zoo_nonfinite"] == {"total": 0, "consecutive": 0}
    with torch.no_grad():
        model.model.unet.conv_in.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(RuntimeError, match="non-finite weights"):
        model.on_save_checkpoint({"state_dict": model.state_dict()})
    other = build_sr(read_context=True)
    with pytest.raises(ValueError, match="context_layers"):
        model.on_load_checkpoint({"state_dict": other.state_dict()})


# --------------------------------------------------------------------------------------------- text encoders
def test_sr_reads_texts_from_the_cache_without_the_encoder(tmp_path, sr_batch) -> None:
    texts = ["", *sr_batch.texts]
    direct = build_sr().encode_text(texts)
    model = build_sr(text_cache=str(tmp_path))
    TextEmbeddingCache(tmp_path, model.text_encoder).build(model.text_encoder, texts)
    model = build_sr(text_cache=str(tmp_path))  # the cache as a run opens it
    calls = []
    model.text_encoder.model.register_forward_pre_hook(lambda *args: calls.append(1))
    cached = model.encode_text(texts[::-1])
    assert not calls
    assert torch.equal(cached[0], direct[0].flip(0)) and torch.equal(cached[1], direct[1].flip(0))
    assert torch.isfinite(model.training_step(sr_batch, 0))
    assert not calls  # training with dropout reads the payload texts and "" from the cache too


def test_sr_takes_a_class_path_text_encoder_and_reloads_it(tmp_path) -> None:
    encoder = TextEncoder("builtin:tiny-t5", max_length=TEXT_MAX_LENGTH, seed=5)
    model = build_sr(text_encoder=encoder, text_max_length=None)
    assert model.hparams.text_encoder["class_path"] == "zoo.models.text.TextEncoder"
    assert model.text_encoder.fingerprint != build_sr().text_encoder.fingerprint  # seed 5, not the default
    loaded = save_and_reload(model, tmp_path / "sr.ckpt")
    assert loaded.text_encoder.fingerprint == encoder.fingerprint


def test_sr_text_width_is_checked_with_a_hint() -> None:
    from zoo.models.presets import resolve_unet_config

    with pytest.raises(ValueError, match="reads 48-d text .* set encoder_hid_dim"):
        build_sr(unet={**resolve_unet_config("tiny"), "cross_attention_dim": 48})


# ------------------------------------------------------------------------------------------------- optimizer
def test_sr_optimizer_comes_from_its_own_settings() -> None:
    from transformers.optimization import Adafactor

    model = build_sr(optimizer="adafactor", adafactor_beta1=0.9, learning_rate=1e-3, warmup_steps=4)
    assert model.optimizer_spec == OptimizerSpec("adafactor", 1e-3, 4, 0.0, 0.9, None)
    configured = model.configure_optimizers()
    optimizer = configured["optimizer"]
    assert isinstance(optimizer, Adafactor) and optimizer.defaults["beta1"] == 0.9
    assert configured["lr_scheduler"]["scheduler"].get_last_lr() == [pytest.approx(1e-3 / 5)]  # warm-up step 1/5
    with pytest.raises(ValueError, match="adafactor_beta2_cap"):
        build_sr(adafactor_beta2_cap=1.0)
    with pytest.raises(ValueError, match="'sgd'"):
        OptimizerSpec("sgd")


# ------------------------------------------------------------------------------------------- guided sampling
def test_sr_generate_equals_a_manual_guided_loop(task_instructions) -> None:
    """The one sampling loop with SR's inputs: the low-resolution image and its level reach every branch, the
    context (read here, with non-zero layers) is dropped in the text and null branches, and both scales apply."""
    model = build_sr(read_context=True)
    perturb_context_layers(model.model)
    model.eval()
    low = torch.rand(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    chosen = make_sampler("dpmsolver++", model.scheduler, num_inference_steps=3, guidance_scale=3.0, context_scale=2.0)
    got = model.generate(task_instructions, low, chosen, seed=4, noise_level=0.1)

    batch = collate_instructions([i.resized(SR_SIZE) for i in task_instructions])
    b = len(batch)
    generator = torch.Generator().manual_seed(4)
    level = torch.full((b,), round(0.1 * 999))
    with torch.no_grad():
        up = upsample(low, SR_SIZE)
        alpha_bar = model.scheduler.alphas_cumprod[level[0]]
        lowres = alpha_bar.sqrt() * up + (1 - alpha_bar).sqrt() * torch.randn(up.shape, generator=generator)
        text, mask = model.encode_text(batch.texts)
        null, null_mask = model.encode_text([""] * b)
        context = model.encode_context(batch)
        net = model.model
        noise = torch.randn(b, 3, SR_SIZE, SR_SIZE, generator=generator)
        scheduler = make_sampler("dpmsolver++", model.scheduler).scheduler
        scheduler.set_timesteps(3)
        x = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x_in, t_b = scheduler.scale_model_input(x, t), t.expand(b)
            v_full = net(x_in, t_b, lowres, level, text, mask, context)
            v_text = net(x_in, t_b, lowres, level, text, mask, None)
            v_null = net(x_in, t_b, lowres, level, null, null_mask, None)
            v = v_null + 3.0 * (v_text - v_null) + 2.0 * (v_full - v_text)
            x = scheduler.step(v, t, x, generator=generator).prev_sample
    torch.testing.assert_close(got, x.clamp(-1, 1), atol=2e-5, rtol=0)
    assert (v_full - v_text).abs().max() > 1e-3  # the context is read, so the context scale is tested
    assert downsample(got, IMAGE_SIZE).shape == low.shape


def test_context_lr_scale_gives_the_context_layers_their_own_rate() -> None:
    model = build_tiny_model(learning_rate=1e-3, context_lr_scale=10.0, context_pooled=True)
    optimizer = model.configure_optimizers()["optimizer"]
    backbone, context = optimizer.param_groups
    assert (backbone["lr"], context["lr"]) == (pytest.approx(1e-3), pytest.approx(1e-2))
    context_params = {id(p) for p in model.model.context_layers.parameters()}
    assert {id(p) for p in context["params"]} == context_params  # the pooled path too
    assert not context_params & {id(p) for p in backbone["params"]}
    trainable = sum(p.requires_grad for p in model.parameters())
    assert len(backbone["params"]) + len(context["params"]) == trainable
    # the default keeps one group, so checkpoints written before the option resume
    default = build_tiny_model(learning_rate=1e-3)
    (group,) = default.configure_optimizers()["optimizer"].param_groups
    assert group["lr"] == pytest.approx(1e-3) and len(group["params"]) == sum(
        p.requires_grad for p in default.parameters()
    )
    with pytest.raises(ValueError, match="context_lr_scale must be > 0"):
        build_tiny_model(context_lr_scale=0.0)
