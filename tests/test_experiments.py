"""The ablation script: its report on known results (fast), and end to end in its quick form (minutes: marked slow;
run with `pytest -m slow`)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO_ROOT
from eval_suite_fixture import FakeModel

from experiments.ablations import FULL, ORDER, QUICK, main, render
from zoo.eval import evaluate as evaluate_module


def test_the_report_states_intervals_baselines_the_context_ablation_and_verdicts(tmp_path, monkeypatch) -> None:
    # instructed and stage1+instructed read their context; raw-inputs never does
    monkeypatch.setattr(
        evaluate_module, "load_model", lambda path: FakeModel("blind" if path.stem == "raw-inputs" else "good", 16)
    )
    checkpoints = {name: tmp_path / f"{name}.ckpt" for name in ORDER}
    evaluate_module.evaluate(
        checkpoints, "eval_suite_fixture:fake_suite", tmp_path / "eval", n=6, features=["handcrafted"]
    )
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    models = {m["label"]: m for m in report["models"]}
    args = SimpleNamespace(quick=True, seed=0, threads=1, jobs=2, work=tmp_path)
    text = render(models, report["baselines"], QUICK, args, [("python -m zoo evaluate ...", 2.0)], 60.0)

    assert text.startswith("# Quick smoke run")
    perfect = " | ".join(["1.000 [1.000, 1.000]"] * 3)
    assert f"| instructed | Instruct-Imagen | {perfect} |" in text
    assert "| raw-inputs | Table 4: multi-task, no instructions | 0.500 [0.500, 0.500] | " in text
    assert "| *mean colour* | chance baseline | 0.000 [0.000, 0.000] | " in text
    assert "| *first reference* | chance baseline over 1 of 2 sets | " in text
    assert (
        "- Table 4: instructions beat raw inputs — `instructed` − `raw-inputs`, in-domain: "
        "SC +0.500 [+0.500, +0.500]: **instructed beats raw-inputs**"
    ) in text
    assert "— `stage1+instructed` − `instructed`, zero-shot: SC +0.000 [+0.000, +0.000]: **no separation**" in text
    assert "- `raw-inputs` against chance, in-domain SC: beats 3 of 4 chance baselines" in text  # not first reference
    assert "- `raw-inputs`: 3 of 4 sets — square+colour, colour zero-shot, recolour" in text
    assert "- `instructed`:" not in text
    assert "| instructed | in-domain | 1.000 | 0.000 | +1.000 [+1.000, +1.000] | 0.500 [0.500, 0.500] |" in text
    assert "| raw-inputs | in-domain | 0.000 | 0.000 | +0.000 [+0.000, +0.000] | 0.500 [0.500, 0.500] |" in text
    assert "| square+colour ⚑ | in-domain | 1.000 [1.000, 1.000] / 1.000 / 1.000 | 0.000 [0.000, 0.000] / " in text
    assert "| 0.000 (mean colour) |" in text  # the best chance score of the set


@pytest.mark.slow
def test_quick_ablations_write_the_table(tmp_path) -> None:
    out = tmp_path / "experiments.md"
    assert main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(out)]) == 0
    report = out.read_text()
    assert report.startswith("# Quick smoke run")
    for variant in ("instructed", "raw-inputs", "stage1+instructed"):
        assert f"| {variant} |" in report
    for text in ("**in-domain**", "**zero-shot**", "chance baseline", "## Context ablation", "python -m zoo evaluate"):
        assert text in report
    assert "beats" in report or "no separation" in report


def test_a_missing_instructed_model_is_named_before_any_training(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--instructed", str(tmp_path / "nope"), "--work", str(tmp_path / "runs")])
    assert "--instructed:" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_trained_variants_start_from_the_base_of_the_reused_instructed_model() -> None:
    """`make experiments` compares variants it trains with world-instruct-32, which it reuses: all must start from one
    base, though recipes/stage2.yaml now starts from another (world-base-32-refiner)."""
    made = REPO_ROOT / FULL["instructed"] / "training_config.yaml"
    model = yaml.safe_load(made.read_text())["model"]["init_args"]
    assert FULL["model"]["init_from"] == model["init_from"] == "checkpoints/world-base-32"
    assert FULL["model"]["text_refiner"] == model.get("text_refiner", 0) == 0
