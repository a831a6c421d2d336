"""The ablation script end to end in its quick form (minutes: marked slow; run with `pytest -m slow`)."""

from __future__ import annotations

import pytest

from experiments.ablations import main


@pytest.mark.slow
def test_quick_ablations_write_the_table(tmp_path) -> None:
    out = tmp_path / "experiments.md"
    assert main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(out)]) == 0
    report = out.read_text()
    assert report.startswith("# Quick smoke run")
    for variant in ("instructed", "raw-inputs", "stage1+instructed"):
        assert f"| {variant} |" in report
    assert "in-domain SC" in report and "zero-shot SC" in report and "python -m zoo evaluate" in report
