"""End to end on a tiny checkpoint: `python -m zoo evaluate` writes (and prints) a reproducible Table-4 report with
intervals, chance baselines and the context ablation, and the human rating sheet survives export → fill → import,
with bad cells named by row and column."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import IMAGE_SIZE, build_tiny_model
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from zoo.cli import main
from zoo.eval.rating import import_ratings
from zoo.instruction import collate_instructions

SUITE = "eval_suite_fixture:suite"
FAST = ["--suite", SUITE, "--n", "3", "--steps", "2", "--features", "handcrafted"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A tiny model after one optimisation step, saved as a Lightning checkpoint."""
    from tasks.styled_generation import StyledGeneration

    model = build_tiny_model()
    loader = DataLoader(
        StyledGeneration(num_examples=4, image_size=IMAGE_SIZE), batch_size=4, collate_fn=collate_instructions
    )
    trainer = Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, loader)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def test_evaluate_writes_a_reproducible_table_4_report(checkpoint, tmp_path, capsys) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    two = ["--ckpt", f"A={checkpoint}", "--ckpt", f"B={checkpoint}"]
    assert main(["evaluate", *two, *FAST, "--seed", "3", "--out", str(first)]) == 0
    printed = capsys.readouterr().out
    assert main(["evaluate", *two, *FAST, "--seed", "3", "--out", str(second)]) == 0
    assert (first / "report.json").read_text() == (second / "report.json").read_text()

    report = json.loads((first / "report.json").read_text())
    model, same = report["models"]
    assert model["label"] == "A" and set(model["averages"]) == {"in-domain", "zero-shot"}
    for row in model["sets"]:
        assert row["n"] == 3 and len(row["examples"]) == 3
        assert row["O"] == pytest.approx((row["SC"] * row["PQ"]) ** 0.5)
        assert all(e["SC"] in (0.0, 0.5, 1.0) and 0 <= e["PQ"] <= 1 for e in row["examples"])
        low, high = row["intervals"]["PQ"]
        assert low <= row["PQ"] <= high
        assert (first / "sheets" / "A" / f"{row['name']}.png").is_file()
    # one checkpoint under two labels: the same images, so nothing separates them
    assert [r["SC"] for r in same["sets"]] == [r["SC"] for r in model["sets"]]
    (pair,) = [c for c in report["comparisons"] if not c["b is baseline"]]
    assert pair["averages"]["in-domain"]["SC"]["verdict"] == "no separation"
    assert {b["label"] for b in report["baselines"]} == {"mean colour", "first reference", "another target"}
    ablation = {row["name"]: row for row in model["ablation"]["sets"]}
    assert ablation["text_to_image"]["drop"] is None and ablation["subject_driven"]["drop"] is not None

    markdown = (first / "report.md").read_text()
    for text in (
        "## In-domain",
        "## Zero-shot",
        "| subject_driven",
        "**Average**",
        "I-sim[stand-in",
        "FD[",
        "*mean colour* (baseline)",
        "## Context ablation",
        "| subject_driven | in-domain | A |",
        "## Comparisons",
        "`A` vs `B`, in-domain SC: **no separation**",
    ):
        assert text in markdown
    assert "CLIP-I" not in markdown and "FID" not in markdown  # stand-ins never carry the real metric's name
    assert markdown in printed and "Report written to" in printed  # the tables are printed, too


def test_a_perfect_generator_scores_sc_1_and_beats_noise_on_pq(checkpoint, tmp_path, monkeypatch) -> None:
    from zoo.lit.module import InstructImagen

    def copy_targets(self, batch, **kwargs):
        return batch.target.clone()

    def noise(self, batch, **kwargs):
        return torch.rand(len(batch), 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1

    reports = {}
    for name, fake in (("perfect", copy_targets), ("noise", noise)):
        monkeypatch.setattr(InstructImagen, "generate", fake)
        assert main(["evaluate", "--ckpt", checkpoint, *FAST, "--out", str(tmp_path / name)]) == 0
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())["models"][0]
    assert all(row["SC"] == 1.0 for row in reports["perfect"]["sets"])
    for split in ("in-domain", "zero-shot"):
        assert reports["perfect"]["averages"][split]["PQ"] > reports["noise"]["averages"][split]["PQ"]
        assert reports["noise"]["averages"][split]["PQ"] < 0.2


def test_evaluate_errors_are_one_line(tmp_path, capsys) -> None:
    assert main(["evaluate", "--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path)]) == 2
    assert "missing.ckpt: no such file or folder" in capsys.readouterr().err
    assert main(["evaluate", "--ckpt", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "no *.ckpt file" in capsys.readouterr().err


def fill(sheet, out, sc: str, pq: str, bad: tuple[int, str, str] | None = None) -> str:
    """A rater's copy of `sheet` with every SC and PQ set; `bad` = (spreadsheet row, column, value) overrides one."""
    with open(sheet, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for number, row in enumerate(rows, start=2):
        row["SC"], row["PQ"] = sc, pq
        if bad and bad[0] == number:
            row[bad[1]] = bad[2]
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(out)


def test_rating_export_fill_import_round_trip(checkpoint, tmp_path, capsys) -> None:
    export = tmp_path / "export"
    assert (
        main(
            [
                "rate",
                "export",
                "--ckpt",
                f"mine={checkpoint}",
                "--suite",
                SUITE,
                "--n",
                "2",
                "--steps",
                "2",
                "--out",
                str(export),
            ]
        )
        == 0
    )
    assert "Rating sheet written to" in capsys.readouterr().out
    with open(export / "sheet.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * 2 and all(r["SC"] == "" and r["PQ"] == "" for r in rows)
    assert all((export / r["image"]).is_file() for r in rows)
    assert (export / "GUIDELINES.md").is_file()

    rater_a, rater_b = (
        fill(export / "sheet.csv", tmp_path / "a.csv", "1", "0.5"),
        fill(export / "sheet.csv", tmp_path / "b.csv", "0", "0.5"),
    )
    assert main(["rate", "import", rater_a, rater_b, "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["source"] == "human ratings (2 raters)"
    (model,) = report["models"]
    assert [row["name"] for row in model["sets"]] == [
        "text_to_image",
        "subject_driven",
        "edge_to_image",
        "style+subject",
    ]
    for row in model["sets"]:
        assert row["SC"] == 0.5 and row["PQ"] == 0.5 and row["O"] == pytest.approx(0.5) and row["accuracy"] == 0
    assert "## Zero-shot" in (tmp_path / "report" / "report.md").read_text()

    single = import_ratings([rater_a], tmp_path / "single")
    average = single["models"][0]["averages"]["in-domain"]
    assert (average["SC"], average["PQ"], average["O"], average["sets"]) == (1.0, 0.5, pytest.approx(0.5**0.5), 3)
    assert average["intervals"]["SC"] == (1.0, 1.0)  # human ratings get intervals too


@pytest.mark.parametrize(
    ("column", "value", "message"), [("PQ", "2", "'2' is not a rating"), ("SC", "", "empty is not a rating")]
)
def test_bad_sheet_values_name_the_row_and_column(checkpoint, tmp_path, capsys, column, value, message) -> None:
    header = "model,task,split,id,image,references,instruction,SC,PQ\n"
    rows = "".join(f"m,t,in-domain,{k},x.png,,Draw,1,1\n" for k in range(3))
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(header + rows)
    bad = fill(sheet, tmp_path / "bad.csv", "1", "1", bad=(3, column, value))
    assert main(["rate", "import", bad, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"row 3, column {column}" in err and message in err and err.count("\n") == 1
