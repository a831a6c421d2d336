"""Tests of the command line: verbs, every recipe through LightningCLI, a short fit, and `generate`.

Most tests call `zoo.cli.main([...])` in-process (fast); the bad-input tests of `generate` run a real
`python -m zoo generate` subprocess so that exit codes and stderr are what a user sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning
import pytest
import torch
import yaml
from conftest import IMAGE_SIZE, REPO_ROOT, build_tiny_model
from PIL import Image

from zoo.cli import main

# Overlays (recipes/scale/) are layered after a recipe, never used alone: tests/test_recipes.py parses them layered.
RECIPES = sorted(p for p in (REPO_ROOT / "recipes").rglob("*.yaml") if "scale" not in p.relative_to(REPO_ROOT).parts)
STAGE2 = REPO_ROOT / "recipes" / "stage2.yaml"
VERBS = ["fit", "validate", "test", "predict", "generate"]


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs pass their arguments explicitly; hide pytest's own argv from LightningCLI."""
    monkeypatch.setattr(sys, "argv", ["zoo"])


# ------------------------------------------------------------------------------------------------------- verbs
def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert f"  {verb} " in out
    assert main([]) == 0  # no verb: the same usage
    assert capsys.readouterr().out == out


def test_unknown_verb_is_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "'train'" in err and "fit" in err


def test_generate_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["generate", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--ckpt" in out and "--ref" in out and "--steps" in out


# ------------------------------------------------------------------------------------------------------ recipes
def test_there_are_recipes() -> None:
    assert RECIPES, "no YAML under recipes/"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_recipe_parses(recipe: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(recipe), "--print_config"])
    assert info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert {"trainer", "model", "data"} <= set(config)
    assert config["data"]["tasks"], "a recipe needs at least one task"
    for task in config["data"]["tasks"]:
        assert "class_path" in task


def test_stage2_recipe_values_survive_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(STAGE2), "--print_config", "--data.batch_size", "3"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "zoo.lit.module.InstructImagen"  # the default stage
    model = config["model"]["init_args"]
    assert model["unet"] == "demo_pooled" and model["text_encoder"] == "builtin:small-t5-words"
    assert model["init_from"] == "checkpoints/world-base-32-refiner"  # the shipped text-to-image base (issue #11)
    assert model["text_refiner"] == 2  # the base's refiner: init_from refuses a model without it
    assert config["data"]["batch_size"] == 3  # a dotted override wins over the file
    assert config["data"]["seed"] == config["seed_everything"]  # omegaconf interpolation resolved
    # paper Table 1: ten tasks, ratios summing to 1
    assert [t["class_path"].rsplit(".", 1)[1] for t in config["data"]["tasks"]] == [
        "TextToImage",
        "TextToImage",
        "Control",
        "Control",
        "Control",
        "Control",
        "SubjectDriven",
        "SubjectDriven",
        "StyledGeneration",
        "StyleTransfer",
    ]
    assert config["data"]["ratios"] == [0.15, 0.05, 0.06, 0.06, 0.06, 0.02, 0.30, 0.10, 0.10, 0.10]


def test_unknown_config_key_is_an_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(STAGE2), "--model.not_a_key", "3"])
    assert info.value.code not in (0, None)
    captured = capsys.readouterr()
    assert "not_a_key" in captured.err + captured.out


def test_bad_value_type_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(STAGE2), "--model.optimizer", "sgd"])
    assert info.value.code not in (0, None)
    captured = capsys.readouterr()
    assert "optimizer" in captured.err + captured.out


# ------------------------------------------------------------------------------------------- short fit + generate
def save_png(path: Path, size: int = 24, mode: str = "RGB") -> Path:
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(size, size, 3, generator=g) * 255).byte().numpy()
    Image.fromarray(pixels).convert(mode).save(path)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-step fit of the tiny model from recipes/stage2.yaml with overrides; returns its run folder and files."""
    root = tmp_path_factory.mktemp("fit")
    overrides = root / "overrides.yaml"
    overrides.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [
                        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
                        {
                            "class_path": "zoo.lit.callbacks.SampleGrid",
                            "init_args": {"num_samples": 2, "num_inference_steps": 2},
                        },
                    ]
                }
            }
        )
    )
    argv = [
        "fit",
        "--config",
        str(STAGE2),
        "--config",
        str(overrides),
        "--model.unet",
        "tiny",
        "--model.text_encoder",
        "builtin:tiny-t5",
        "--model.text_max_length",
        "32",
        "--model.init_from",
        "null",  # the recipe's shipped base is another backbone
        "--data.image_size",
        str(IMAGE_SIZE),
        "--data.batch_size",
        "4",
        "--data.val_samples",
        "4",
        "--trainer.max_steps",
        "3",
        "--trainer.default_root_dir",
        str(root / "run"),
        "--trainer.limit_val_batches",
        "1",
        "--trainer.val_check_interval",
        "3",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]
    with torch.random.fork_rng(devices=[]), pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["zoo"])  # (module-scoped: the autouse argv fixture is not active here)
        assert main(argv) == 0
    ckpts = sorted((root / "run").rglob("*.ckpt"))
    grids = sorted((root / "run").rglob("samples/final.png"))
    return {"root": root, "ckpts": ckpts, "grids": grids}


def test_short_fit_writes_a_checkpoint_and_a_sample_grid(fitted: dict) -> None:
    assert fitted["ckpts"], "fit wrote no checkpoint"
    assert any(p.name == "last.ckpt" for p in fitted["ckpts"])
    assert len(fitted["grids"]) == 1
    with Image.open(fitted["grids"][0]) as sheet:
        sheet.load()
        assert sheet.mode == "RGB" and sheet.width > 0 and sheet.height > 0


def test_fit_checkpoint_has_the_linked_image_size_and_the_tiny_model(fitted: dict) -> None:
    checkpoint = torch.load(fitted["ckpts"][0], map_location="cpu", weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["image_size"] == IMAGE_SIZE  # linked from data.image_size
    assert hparams["unet"] == "tiny" and hparams["text_encoder"] == "builtin:tiny-t5"
    assert checkpoint["global_step"] == 3
    assert any(key.startswith("model.context_layers.") for key in checkpoint["state_dict"])
    assert any(key.startswith("text_encoder.") for key in checkpoint["state_dict"])  # a builtin encoder is kept


def test_generate_from_the_fitted_checkpoint(fitted: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = next(p for p in fitted["ckpts"] if p.name == "last.ckpt")
    ref = save_png(tmp_path / "style.png", size=40)  # any size: generate resizes to the model's
    out = tmp_path / "out"
    argv = [
        "generate",
        "--ckpt",
        str(ckpt),
        "Draw a circle in the style of [ref#1]",
        "--ref",
        str(ref),
        "--out",
        str(out),
        "--steps",
        "3",
    ]
    with torch.random.fork_rng(devices=[]):
        assert main(argv) == 0
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == ["sample_0000.png"]
    assert str(written[0]) in capsys.readouterr().out
    with Image.open(written[0]) as image:
        image.load()
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB"


# ------------------------------------------------------------------------------------- generate: user mistakes
@pytest.fixture(scope="module")
def handmade_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lightning-format checkpoint of the tiny model, written without training (independent of the fit test)."""
    model = build_tiny_model()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


def run_generate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "zoo", "generate", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *names: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    for name in names:
        assert name in lines[0]


def test_generate_handmade_checkpoint_works(handmade_ckpt: Path, tmp_path: Path) -> None:
    ref = save_png(tmp_path / "ref.png", mode="RGBA")
    out = tmp_path / "out"
    argv = [
        "generate",
        "--ckpt",
        str(handmade_ckpt),
        "Draw [ref#1] on the left",
        "--ref",
        str(ref),
        "--ref-text",
        "[ref#1] toy",
        "--out",
        str(out),
        "--steps",
        "2",
        "--num-images",
        "2",
        "--seed",
        "5",
    ]
    with torch.random.fork_rng(devices=[]):
        assert main(argv) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["sample_0005.png", "sample_0006.png"]


def test_generate_missing_ref_is_one_line_exit_2(handmade_ckpt: Path, tmp_path: Path) -> None:
    missing = tmp_path / "does_not_exist.png"
    result = run_generate("--ckpt", str(handmade_ckpt), "Draw [ref#1]", "--ref", str(missing), "--out", str(tmp_path))
    assert_one_line_error(result, str(missing))


def test_generate_non_image_ref_is_one_line_exit_2(handmade_ckpt: Path, tmp_path: Path) -> None:
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is not an image\n")
    result = run_generate(
        "--ckpt", str(handmade_ckpt), "Draw [ref#1]", "--ref", str(not_an_image), "--out", str(tmp_path)
    )
    assert_one_line_error(result, str(not_an_image))


def test_generate_marker_without_ref_is_one_line_exit_2(handmade_ckpt: Path, tmp_path: Path) -> None:
    result = run_generate("--ckpt", str(handmade_ckpt), "Draw a circle in the style of [ref#1]", "--out", str(tmp_path))
    assert_one_line_error(result, "[ref#1]")
    assert not list(tmp_path.glob("*.png"))


def test_generate_missing_ckpt_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.ckpt"
    assert main(["generate", "--ckpt", str(missing), "Draw a circle", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(missing) in err
