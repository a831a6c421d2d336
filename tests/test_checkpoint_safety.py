"""No code runs from a checkpoint file: a `.ckpt` whose pickle would create a marker file when unpickled goes through
every entry point that reads a user's checkpoint, with and without TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, and each
refuses it with one error line naming the file (`zoo.checkpoint_io`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning
import pytest
import torch
from cli_helpers import run_zoo, tiny_recipe, write_recipe
from conftest import build_tiny_model

from zoo.checkpoint_io import CheckpointError, load_checkpoint, load_stage
from zoo.cli import main as zoo_main


class MakesMarker:
    """Unpickling this calls open(marker, "w"): the file appears if, and only if, the pickle is executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def malicious(tmp_path_factory) -> tuple[Path, Path]:
    """(a checkpoint of the tiny model carrying a MakesMarker object, the marker it would create)."""
    root = tmp_path_factory.mktemp("malicious")
    model, marker = build_tiny_model(), root / "pwned"
    path = root / "evil.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
            "payload": MakesMarker(marker),
        },
        path,
    )
    torch.load(path, weights_only=False)  # the file really does run code when it is trusted ...
    assert marker.is_file()
    marker.unlink()  # ... which the tests below must never let happen
    return path, marker


@pytest.fixture(params=["default", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"])
def torch_env(request, monkeypatch) -> dict[str, str]:
    """torch reads the variable at each load, so setting it here reaches in-process calls too."""
    monkeypatch.setattr(sys, "argv", ["zoo"])
    if request.param == "default":
        monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
        return {}
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    return {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def assert_refused(err: str, out: str, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the checkpoint's pickle ran"
    assert "Traceback" not in err + out
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and "refused" in errors[0], err


def cli_cases(tmp: Path, evil: Path) -> dict[str, list[str]]:
    """Each entry point's command line (nothing is written: the test writes the recipe the fit cases read)."""
    recipe = str(tmp / "tiny.yaml")
    return {
        "generate --ckpt": ["generate", "Draw a red circle", "--ckpt", str(evil), "--out", str(tmp / "g")],
        "generate --sr-ckpt": [
            "generate",
            "Draw a red circle",
            "--ckpt",
            str(evil),
            "--sr-ckpt",
            str(evil),
            "--out",
            str(tmp / "g"),
        ],
        "evaluate --ckpt": [
            "evaluate",
            "--ckpt",
            str(evil),
            "--features",
            "handcrafted",
            "--n",
            "1",
            "--out",
            str(tmp / "e"),
        ],
        "rate export --ckpt": ["rate", "export", "--ckpt", str(evil), "--n", "1", "--out", str(tmp / "r")],
        "fit --ckpt_path": ["fit", "--config", recipe, "--ckpt_path", str(evil)],
        "validate --ckpt_path": ["validate", "--config", recipe, "--ckpt_path", str(evil)],
        "fit --model.init_from": ["fit", "--config", recipe, "--model.init_from", str(evil)],
        "lora export --ckpt": ["lora", "export", "--ckpt", str(evil), "--out", str(tmp / "a")],
        "lora merge --base": ["lora", "merge", str(tmp / "adapter"), "--base", str(evil), "--out", str(tmp / "m.ckpt")],
    }


@pytest.mark.parametrize("entry", list(cli_cases(Path("."), Path("x"))))
def test_every_cli_entry_point_refuses_a_malicious_checkpoint(entry, malicious, torch_env, tmp_path, capsys) -> None:
    evil, marker = malicious
    write_recipe(tmp_path / "tiny.yaml", tiny_recipe(tmp_path / "run"))
    assert zoo_main(cli_cases(tmp_path, evil)[entry]) == 2
    captured = capsys.readouterr()
    assert_refused(captured.err, captured.out, evil, marker)


def test_python_m_zoo_generate_prints_one_line_with_the_variable_set(malicious, tmp_path) -> None:
    """The issue's report, end to end: a fresh process, the variable set, `python -m zoo generate --ckpt`."""
    evil, marker = malicious
    result = run_zoo(
        "generate",
        "Draw a red circle",
        "--ckpt",
        str(evil),
        "--out",
        str(tmp_path),
        env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )
    assert result.returncode == 2
    assert_refused(result.stderr, result.stdout, evil, marker)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_library_loaders_refuse_a_malicious_checkpoint(malicious, torch_env) -> None:
    from zoo.lit.fsdp import FSDPStrategyForLoRA
    from zoo.lit.module import InstructImagen
    from zoo.lit.sr_module import SuperResolution
    from zoo.pipeline import InstructImagenPipeline

    evil, marker = malicious
    strategy = FSDPStrategyForLoRA()
    strategy._lightning_module = build_tiny_model(lora={"rank": 2})  # an fsdp_lora resume of a LoRA run
    calls = {
        "load_checkpoint": lambda: load_checkpoint(evil),
        "pipeline base": lambda: InstructImagenPipeline.from_checkpoint(evil),
        "pipeline sr": lambda: load_stage(SuperResolution, evil),
        "init_from": lambda: build_tiny_model(init_from=str(evil)),
        "lora merge base": lambda: load_stage(InstructImagen, evil, with_lora=False),
        "fsdp_lora resume": lambda: strategy.load_checkpoint(evil),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="refused") as caught:
            call()
        assert str(evil) in str(caught.value) and "\n" not in str(caught.value), name
        assert not marker.exists(), name


def test_damaged_and_foreign_files_are_one_line_errors(tmp_path) -> None:
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": build_tiny_model().state_dict()}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    not_a_dict = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(2), not_a_dict)
    cases = {
        truncated: "not a readable checkpoint",
        not_a_dict: "not a checkpoint (it holds a Tensor)",
        tmp_path / "missing.ckpt": "no such file",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match="^--ckpt ") as caught:
            load_checkpoint(path, "--ckpt")
        assert str(path) in str(caught.value) and message in str(caught.value) and "\n" not in str(caught.value)


def test_a_real_checkpoint_still_loads_with_the_variable_set(tmp_path, monkeypatch) -> None:
    from zoo.lit.module import InstructImagen

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    model = build_tiny_model()
    path = tmp_path / "good.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    loaded, _ = load_stage(InstructImagen, path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
