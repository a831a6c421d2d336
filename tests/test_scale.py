"""The scale switches on tiny models: gradient checkpointing (same loss and gradients), compile (same outputs),
precision safety (the text encoder's own dtype, the cache's recorded dtype, a bf16-mixed run) and offloaded
inference (same images, the moves made)."""

from __future__ import annotations

import pytest
import torch
from conftest import build_sr, build_tiny_model, perturb_context_layers

from zoo.instruction import InstructionBatch


# ------------------------------------------------------------------------------------------ gradient checkpointing
def loss_and_grads(model: torch.nn.Module, batch: InstructionBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One loss (fixed noise and timesteps) and every parameter's gradient."""
    model.train()
    model.zero_grad()
    loss = model.loss(batch, dropout=False, generator=torch.Generator().manual_seed(0))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_training_signal(build, batch: InstructionBatch, **options) -> None:
    plain, checkpointed = build(**options), build(**options, gradient_checkpointing=True)
    for model in (plain, checkpointed):  # context layers with weights, so a wrong context in recomputation shows
        perturb_context_layers(model)
    loss, grads = loss_and_grads(plain, batch)
    loss_ckpt, grads_ckpt = loss_and_grads(checkpointed, batch)
    torch.testing.assert_close(loss_ckpt, loss, atol=1e-6, rtol=1e-5)
    assert grads.keys() == grads_ckpt.keys() and grads
    assert any("context_layers" in name for name in grads) == options.get("read_context", True)
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], atol=1e-6, rtol=1e-4, msg=name)


def paper_shaped_unet() -> dict:
    """`paper_base128`'s layout (IF-style `SimpleCrossAttn` blocks, where diffusers checkpoints no attention, and a
    pooled text embedding), tiny."""
    from zoo.models.presets import paper_base128

    config = paper_base128()
    config.update(
        sample_size=16,
        block_out_channels=(8, 8, 16, 32),
        layers_per_block=(0, 1, 1, 1),
        cross_attention_dim=32,
        encoder_hid_dim=32,
        norm_num_groups=4,
        attention_head_dim=8,
        addition_embed_type_num_heads=4,
    )
    return config


@pytest.mark.parametrize("unet", ["tiny", "paper-shaped"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(task_batch: InstructionBatch, unet: str) -> None:
    assert_same_training_signal(build_tiny_model, task_batch, unet=paper_shaped_unet() if unet != "tiny" else unet)


def test_gradient_checkpointing_with_lora(task_batch: InstructionBatch) -> None:
    assert_same_training_signal(
        build_tiny_model, task_batch, lora={"rank": 4, "targets": "attention", "init": "gaussian"}
    )


@pytest.mark.parametrize("read_context", [True, False])
def test_gradient_checkpointing_sr(task_batch: InstructionBatch, read_context: bool) -> None:
    batch = task_batch.to("cpu")
    batch.target = torch.nn.functional.interpolate(batch.target, scale_factor=2)  # the SR stage's resolution
    assert_same_training_signal(build_sr, batch, read_context=read_context)


def test_gradient_checkpointing_is_on_where_asked() -> None:
    model = build_tiny_model(gradient_checkpointing=True)
    assert model.model.unet.is_gradient_checkpointing and model.model.gradient_checkpointing
    assert not build_tiny_model().model.unet.is_gradient_checkpointing
    assert build_sr(gradient_checkpointing=True).model.unet.is_gradient_checkpointing


# ------------------------------------------------------------------------------------------------------- compile
@pytest.mark.slow  # inductor's C++ compilation of even the tiny UNet takes minutes on this 2-core CPU
def test_compile_gives_the_same_outputs(task_batch: InstructionBatch) -> None:
    plain, compiled = build_tiny_model(), build_tiny_model(compile=True)
    outputs = []
    for model in (plain, compiled):
        perturb_context_layers(model)
        model.eval()
        model.compile_network()
        with torch.no_grad():  # one denoiser call with text and context: the hooks run inside the compiled forward
            text, text_mask = model.encode_text(task_batch.texts)
            context = model.encode_context(task_batch)
            x_t = torch.randn(task_batch.target.shape, generator=torch.Generator().manual_seed(0))
            outputs.append(model.denoise(x_t, torch.tensor([10, 500, 990]), text, text_mask, context))
    assert compiled.model.unet._compiled_call_impl is not None  # compiled in place: the state dict keys are the same
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-4)


def test_a_model_trained_compiled_samples_uncompiled(tmp_path) -> None:
    """`compile` is a training run's setting: the checkpoint and the pipeline folder rebuild an eager stage, so
    generating on a machine without a compiler neither fails nor spends minutes compiling."""
    from zoo.checkpoint_io import load_stage, save_weights_checkpoint
    from zoo.lit.module import InstructImagen
    from zoo.pipeline import InstructImagenPipeline

    path = save_weights_checkpoint(build_tiny_model(compile=True), tmp_path / "compiled.ckpt")
    stage, _ = load_stage(InstructImagen, path)
    assert stage.hparams.compile is False
    folder = InstructImagenPipeline(stage).save_pretrained(tmp_path / "pipeline")
    assert InstructImagenPipeline.from_pretrained(folder).base.hparams.compile is False


def test_compile_where_the_backend_cannot_is_one_line(monkeypatch, task_batch: InstructionBatch) -> None:
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    model = build_tiny_model(compile=True)
    with pytest.raises(ValueError, match=r"^model.compile: torch.compile is not supported .*set model.compile false"):
        model.loss(task_batch, dropout=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: True)
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler"):
        model.loss(task_batch, dropout=False)


# ----------------------------------------------------------------------------------------------------- precision
def test_text_encoder_runs_in_its_own_dtype_under_autocast() -> None:
    from zoo.models.text import TextEncoder

    encoder, texts = TextEncoder("builtin:tiny-t5", max_length=16), ["a red circle", "Draw [ref#1]"]
    reference, _ = encoder(texts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside, _ = encoder(texts)
        asked, _ = TextEncoder("builtin:tiny-t5", max_length=16, autocast=True)(texts)
    assert inside.dtype == torch.float32 and torch.equal(inside, reference)
    assert not torch.equal(asked, reference)  # autocast=True: the caller's bf16 autocast ran inside (rounded)


def test_a_module_wide_cast_leaves_the_text_encoder_alone() -> None:
    model = build_tiny_model()
    before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    model.half()  # what Lightning's "16-true" precision does to the module
    assert model.network_dtype == torch.float16
    after = model.text_encoder.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_text_encoder_dtype_option() -> None:
    from zoo.models.text import TextEncoder

    fp32, bf16 = TextEncoder("builtin:tiny-t5", max_length=16), TextEncoder("builtin:tiny-t5", 16, dtype="bfloat16")
    assert bf16.config_spec()["init_args"]["dtype"] == "bfloat16" and "dtype" not in fp32.config_spec()["init_args"]
    assert bf16(["a red circle"])[0].dtype == torch.bfloat16 and bf16.fingerprint != fp32.fingerprint
    assert fp32.set_dtype(torch.bfloat16).fingerprint == bf16.fingerprint
    with pytest.raises(ValueError, match="dtype must be one of"):
        TextEncoder("builtin:tiny-t5", 16, dtype="float8")


def test_cached_embeddings_record_their_dtype_and_are_cast(tmp_path) -> None:
    from zoo.models.text_cache import TextEmbeddingCache

    model = build_tiny_model(text_cache=str(tmp_path))
    texts = ["a red circle", "a blue square"]
    TextEmbeddingCache(tmp_path, model.text_encoder).build(model.text_encoder, texts[:1])
    model = build_tiny_model(text_cache=str(tmp_path))
    assert set(model.text_cache.dtypes.values()) == {"float32"}
    reference, mask = model.text_encoder(texts)
    model.to(torch.bfloat16)  # a bf16-true network: one cached row, one encoded, both cast
    embeddings, cached_mask = model.encode_text(texts)
    assert model.text_cache.hits == 1 and embeddings.dtype == torch.bfloat16
    assert torch.equal(embeddings, reference.to(torch.bfloat16)) and torch.equal(cached_mask, mask)


def fit_a_few_steps(precision: str, accelerator: str) -> torch.nn.Module:
    from lightning import Trainer
    from torch.utils.data import DataLoader

    from tasks.styled_generation import StyledGeneration
    from zoo.instruction import collate_instructions

    model = build_tiny_model(learning_rate=1e-3)
    dtypes = []
    model.text_encoder.register_forward_hook(lambda module, args, output: dtypes.append(output[0].dtype))
    data = StyledGeneration(num_examples=8, image_size=16)
    trainer = Trainer(
        max_steps=4,
        precision=precision,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=2, collate_fn=collate_instructions))
    assert trainer.global_step == 4 and model.nonfinite.total == 0
    assert set(dtypes) == {torch.float32}  # the encoder ran in fp32 under the trainer's autocast
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return model


def test_bf16_mixed_training_stays_finite() -> None:
    fit_a_few_steps("bf16-mixed", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_mixed_training_stays_finite() -> None:
    fit_a_few_steps("16-mixed", "gpu")


# -------------------------------------------------------------------------------------------- offloaded inference
@pytest.fixture
def cascade():
    from zoo.pipeline import InstructImagenPipeline

    base, sr = build_tiny_model(), build_sr(read_context=True)
    perturb_context_layers(base, 1)
    perturb_context_layers(sr, 2)
    return InstructImagenPipeline(base, sr)


def prompts() -> list:
    from zoo.instruction import ContextItem, Instruction

    style = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    return [
        "Draw a red circle on the left",
        Instruction("Draw a square like [ref#1]", context=[ContextItem("[ref#1]", "a [ref#1] style image", style)]),
    ]


FAST = dict(num_inference_steps=2, sr_num_inference_steps=2, output_type="pt")


def test_offload_gives_identical_images_and_moves_each_part(cascade) -> None:
    reference = cascade(prompts(), **FAST)
    cascade.enable_model_cpu_offload("cpu")  # on CPU the moves change nothing, but they all happen
    assert torch.equal(cascade(prompts(), **FAST), reference)
    names = [name for name, _ in cascade.offload.moves]
    # the base network in, out for its text encoder and back; later the SR network; nothing left on the device
    assert names[:4] == ["base.network", "base.network", "base.text_encoder", "base.text_encoder"]
    assert {"sr.network", "sr.text_encoder"} <= set(names) and cascade.offload.active is None
    assert names.index("sr.network") > max(i for i, n in enumerate(names) if n == "base.text_encoder")
    with pytest.raises(ValueError, match="offloads"):
        cascade.to("cpu")


def test_pipeline_to_dtype_casts_the_networks_not_the_text_encoder(cascade) -> None:
    reference = cascade(prompts(), **FAST)
    cascade.to(torch.float64)
    assert cascade.base.network_dtype == torch.float64 and cascade.sr.network_dtype == torch.float64
    assert cascade.base.text_encoder.compute_dtype == torch.float32
    torch.testing.assert_close(cascade(prompts(), **FAST), reference, atol=1e-4, rtol=0)
    assert torch.isfinite(cascade.to(torch.bfloat16)(prompts(), **FAST)).all()


def test_generate_offload_flag_gives_the_same_png(cascade, tmp_path, monkeypatch) -> None:
    from zoo.cli import main

    monkeypatch.setattr("sys.argv", ["zoo"])
    folder = cascade.save_pretrained(tmp_path / "cascade")
    common = ["generate", "--model", str(folder), "Draw a red circle", "--steps", "2", "--sr-steps", "2"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "offload"), "--offload"]) == 0
    png = "sample_0000.png"
    assert (tmp_path / "plain" / png).read_bytes() == (tmp_path / "offload" / png).read_bytes()


@pytest.mark.slow  # two training processes: ~1 minute on the 2-core CPU
def test_gradient_checkpointing_under_ddp_from_the_recipe(tmp_path) -> None:
    from cli_helpers import run_zoo, tiny_recipe, write_recipe

    recipe = tiny_recipe(tmp_path / "run", gradient_checkpointing=True)
    recipe["trainer"].update(max_steps=2, devices=2, strategy="ddp")
    result = run_zoo("fit", "--config", str(write_recipe(tmp_path / "ddp.yaml", recipe)))
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["hyper_parameters"]["gradient_checkpointing"] is True
