"""Tests of the cascade pipeline: base → SR in one batched call, the saved folder (layout, diffusers-loadable UNet,
round trip with identical outputs), checkpoints, and the `export` / `generate --model` verbs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning
import pytest
import torch
from conftest import IMAGE_SIZE, SR_SIZE, TEXT_MAX_LENGTH, build_sr, build_tiny_model, perturb_context_layers
from diffusers import UNet2DConditionModel
from PIL import Image

from zoo.cli import main
from zoo.instruction import ContextItem, Instruction
from zoo.pipeline import InstructImagenPipeline

FAST = dict(num_inference_steps=2, sr_num_inference_steps=2)


@pytest.fixture(scope="module")
def cascade() -> InstructImagenPipeline:
    base, sr = build_tiny_model(), build_sr(read_context=True)
    perturb_context_layers(base, 1)
    perturb_context_layers(sr, 2)
    return InstructImagenPipeline(base, sr)


@pytest.fixture(scope="module")
def saved(cascade: InstructImagenPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cascade.save_pretrained(tmp_path_factory.mktemp("pipe") / "cascade")


def mixed_instructions() -> list[Instruction | str]:
    g = torch.Generator().manual_seed(0)
    style = torch.rand(3, 40, 40, generator=g)  # any size: each stage resizes to its own
    return [
        "Draw a red circle on the left",
        Instruction(
            "Draw a square in the style of [ref#1]", context=[ContextItem("[ref#1]", "a [ref#1] style image", style)]
        ),
    ]


def test_one_call_runs_base_then_sr_batched(cascade: InstructImagenPipeline, monkeypatch) -> None:
    calls = []
    for stage in (cascade.base, cascade.sr):
        original = stage.generate
        monkeypatch.setattr(
            stage, "generate", lambda *a, _o=original, _s=stage, **k: calls.append(type(_s).__name__) or _o(*a, **k)
        )
    images = cascade(mixed_instructions(), **FAST)
    assert calls == ["InstructImagen", "SuperResolution"]
    assert len(images) == 2 and all(isinstance(i, Image.Image) and i.size == (SR_SIZE, SR_SIZE) for i in images)
    tensor = cascade(mixed_instructions(), output_type="pt", **FAST)
    assert tensor.shape == (2, 3, SR_SIZE, SR_SIZE) and tensor.min() >= 0 and tensor.max() <= 1


def test_base_only_pipeline_and_sampler_choice(cascade: InstructImagenPipeline) -> None:
    base_only = InstructImagenPipeline(cascade.base)
    out = base_only("Draw a red circle", sampler="dpmsolver++", num_inference_steps=3, output_type="pt")
    assert out.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(ValueError, match="euler"):
        base_only("Draw", sampler="euler")
    with pytest.raises(ValueError, match="euler"):
        InstructImagenPipeline(cascade.base, sampler="euler")


def test_mismatched_stage_sizes_are_named(cascade: InstructImagenPipeline) -> None:
    with pytest.raises(ValueError, match="lowres_size"):
        InstructImagenPipeline(cascade.base, build_sr(lowres_size=8))


def test_saved_folder_layout(saved: Path) -> None:
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == "InstructImagenPipeline" and index["_zoo_version"]
    assert index["base"] == ["zoo.lit.module", "InstructImagen"]
    assert index["sr"] == ["zoo.lit.sr_module", "SuperResolution"]
    for path in [
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "scheduler/scheduler_config.json",
        "base/zoo_config.json",
        "base/unet/config.json",
        "base/unet/diffusion_pytorch_model.safetensors",
        "base/context_layers.safetensors",
        "sr/unet/diffusion_pytorch_model.safetensors",
        "sr/context_layers.safetensors",
        "sr/scheduler/scheduler_config.json",
        "README.md",
    ]:
        assert (saved / path).is_file(), path
    assert not (saved / "sr" / "text_encoder").exists()  # the same encoder is stored once
    assert not list(saved.rglob("*.bin")) and not list(saved.rglob("*.ckpt"))  # safetensors only


def test_saved_unet_loads_in_plain_diffusers(cascade: InstructImagenPipeline, saved: Path) -> None:
    unet = UNet2DConditionModel.from_pretrained(saved / "sr" / "unet")
    assert unet.config.in_channels == 6 and unet.config.class_embed_type == "timestep"
    ours = cascade.sr.model.unet.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in unet.state_dict().items())


def test_round_trip_gives_identical_outputs(cascade: InstructImagenPipeline, saved: Path) -> None:
    loaded = InstructImagenPipeline.from_pretrained(saved)
    assert loaded.sr.text_encoder is loaded.base.text_encoder
    for kwargs in [dict(seed=3), dict(seed=4, sampler="unipc", guidance_scale=4.0, context_guidance_scale=2.0)]:
        a = cascade(mixed_instructions(), output_type="pt", **FAST, **kwargs)
        b = loaded(mixed_instructions(), output_type="pt", **FAST, **kwargs)
        assert torch.equal(a, b)


def test_from_pretrained_of_a_non_pipeline_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_index.json"):
        InstructImagenPipeline.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------- checkpoints + CLI
def write_ckpt(module: torch.nn.Module, path: Path) -> Path:
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def ckpts(cascade: InstructImagenPipeline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ckpts")
    return write_ckpt(cascade.base, folder / "base.ckpt"), write_ckpt(cascade.sr, folder / "sr.ckpt")


def test_from_checkpoint_equals_the_modules(cascade: InstructImagenPipeline, ckpts: tuple[Path, Path]) -> None:
    pipe = InstructImagenPipeline.from_checkpoint(*ckpts)
    a = cascade(mixed_instructions(), output_type="pt", seed=5, **FAST)
    assert torch.equal(pipe(mixed_instructions(), output_type="pt", seed=5, **FAST), a)
    with pytest.raises(ValueError, match="nope.ckpt"):
        InstructImagenPipeline.from_checkpoint(ckpts[0], ckpts[0].parent / "nope.ckpt")


def test_a_checkpoint_loads_after_the_file_it_started_from_is_gone(tmp_path: Path) -> None:
    """A checkpoint holds the whole network, so its run's `init_from` is not read again (`zoo.checkpoint_io`)."""
    start = write_ckpt(build_tiny_model(seed=3), tmp_path / "start.ckpt")
    trained = build_tiny_model(init_from=str(start))
    perturb_context_layers(trained, 4)
    ckpt = write_ckpt(trained, tmp_path / "run.ckpt")
    start.unlink()
    loaded = InstructImagenPipeline.from_checkpoint(ckpt).base
    assert loaded.hparams.init_from is None
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.state_dict().items())


def test_export_then_generate_with_model_folder(ckpts: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["zoo"])
    out = tmp_path / "exported"
    assert (
        main(
            [
                "export",
                "--ckpt",
                str(ckpts[0]),
                "--sr-ckpt",
                str(ckpts[1]),
                "--out",
                str(out),
                "--sampler",
                "dpmsolver++",
                "--guidance-scale",
                "1.5",
            ]
        )
        == 0
    )
    assert json.loads((out / "model_index.json").read_text())["sampler"] == "dpmsolver++"
    assert InstructImagenPipeline.from_pretrained(out).base.hparams.guidance_scale == 1.5
    assert "guidance scale 1.5, set at export" in (out / "README.md").read_text()
    images = tmp_path / "images"
    argv = [
        "generate",
        "--model",
        str(out),
        "Draw a red circle",
        "--steps",
        "2",
        "--sr-steps",
        "2",
        "--out",
        str(images),
        "--guidance",
        "2",
        "--context-guidance",
        "1.5",
    ]
    assert main(argv) == 0
    with Image.open(images / "sample_0000.png") as image:
        assert image.size == (SR_SIZE, SR_SIZE)


def test_generate_cli_with_sr_checkpoint_and_sampler(ckpts: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["zoo"])
    argv = [
        "generate",
        "--ckpt",
        str(ckpts[0]),
        "--sr-ckpt",
        str(ckpts[1]),
        "Draw a red circle",
        "--sampler",
        "unipc",
        "--steps",
        "2",
        "--sr-steps",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    with Image.open(tmp_path / "sample_0000.png") as image:
        assert image.size == (SR_SIZE, SR_SIZE)


def test_cli_mistakes_are_one_line_exit_2(ckpts: tuple[Path, Path], tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["zoo"])
    missing = tmp_path / "missing.ckpt"
    for argv, name in [
        (
            ["generate", "--ckpt", str(ckpts[0]), "--sr-ckpt", str(missing), "Draw", "--out", str(tmp_path)],
            str(missing),
        ),
        (["generate", "--model", str(tmp_path), "Draw", "--out", str(tmp_path)], "model_index.json"),
        (["export", "--ckpt", str(missing), "--out", str(tmp_path / "x")], str(missing)),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and name in err


# ------------------------------------------------------------------------------------ a shipped model's folder
def test_export_card_says_how_it_was_made_and_how_it_scores(cascade: InstructImagenPipeline, tmp_path: Path) -> None:
    """`export --eval` puts the run's config, steps, training time and the evaluation's tables in the card."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  unet: tiny\n")
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save(
        {
            "state_dict": cascade.base.state_dict(),
            "hyper_parameters": dict(cascade.base.hparams),
            "pytorch-lightning_version": lightning.__version__,
            "global_step": 123,
            "callbacks": {"Timer": {"time_elapsed": {"train": 600.0}}},
        },
        ckpt,
    )
    report = tmp_path / "eval"
    (report / "sheets" / "m").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(report / "sheets" / "m" / "text_to_image.png")
    (report / "report.md").write_text(
        "# Evaluation\n\n## In-domain (Table 4 layout)\n\n| set | SC |\n|---|---|\n"
        "| text_to_image | 0.75 [0.50, 1.00] |\n\n## How the numbers are measured\n\nsecret\n"
    )
    (report / "report.json").write_text(
        json.dumps(
            {
                "suite": "builtin",
                "settings": {"n per set": 4},
                "sheets": {"m / text_to_image": "sheets/m/text_to_image.png"},
            }
        )
    )
    out = tmp_path / "shipped"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--eval", str(report)]) == 0
    card = (out / "README.md").read_text()
    assert "123 optimizer steps, 10.0 minutes of training" in card
    assert "guidance scale" not in card  # the run's own scale: nothing to say
    assert "python -m zoo fit --config training_config.yaml" in card and (out / "training_config.yaml").is_file()
    assert "### In-domain" in card and "0.75 [0.50, 1.00]" in card and "secret" not in card
    assert (out / "evaluation.md").is_file() and (out / "evaluation" / "sheets" / "m" / "text_to_image.png").is_file()
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "x"), "--eval", str(tmp_path)]) == 2
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "y"), "--weights", "live"]) == 2  # no EMA


def test_export_live_weights_of_an_ema_run(cascade: InstructImagenPipeline, tmp_path: Path) -> None:
    """`--weights live` exports the non-averaged weights an EMA run keeps beside the average."""
    state = cascade.base.state_dict()
    live = {k: v + 1 if k.startswith("model.unet.conv_in") else v for k, v in state.items()}
    ckpt = tmp_path / "ema.ckpt"
    torch.save(
        {
            "state_dict": state,
            "current_model_state": live,
            "hyper_parameters": dict(cascade.base.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        ckpt,
    )
    for weights, expected in [("ema", state), ("live", live)]:
        assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / weights), "--weights", weights]) == 0
        pipe = InstructImagenPipeline.from_pretrained(tmp_path / weights)
        assert torch.equal(pipe.base.model.unet.conv_in.weight, expected["model.unet.conv_in.weight"])
        assert (
            f"Weights: the run's {'EMA' if weights == 'ema' else 'live'}"
            in (tmp_path / weights / "README.md").read_text()
        )


def test_a_pipeline_folder_is_an_init_from_source_and_an_evaluate_checkpoint(saved: Path, cascade) -> None:
    """Stage 2 starts from a shipped folder (`--model.init_from checkpoints/<name>`): the base UNet and its context
    layers load; `evaluate --ckpt FOLDER` reads the folder's base stage."""
    from zoo.eval.evaluate import find_checkpoint, load_model, parse_checkpoints

    expected = cascade.base.model.state_dict()
    fresh = build_tiny_model(seed=7, init_from=str(saved))
    assert all(torch.equal(fresh.model.state_dict()[name], value) for name, value in expected.items())
    assert find_checkpoint(str(saved)) == saved and list(parse_checkpoints([str(saved)])) == [saved.name]
    loaded = load_model(saved)
    assert all(torch.equal(loaded.model.state_dict()[name], value) for name, value in expected.items())


def test_stages_with_one_encoder_at_two_lengths_keep_their_own_lengths(tmp_path: Path) -> None:
    """The same weights cut at two lengths are two encoders: the SR stage must not get the base's on load."""
    pipe = InstructImagenPipeline(build_tiny_model(), build_sr(text_max_length=TEXT_MAX_LENGTH + 8))
    loaded = InstructImagenPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "pipe"))
    assert loaded.sr.text_encoder is not loaded.base.text_encoder
    assert (loaded.base.text_encoder.max_length, loaded.sr.text_encoder.max_length) == (
        TEXT_MAX_LENGTH,
        TEXT_MAX_LENGTH + 8,
    )
