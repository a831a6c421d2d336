"""experiments/conditions.py: a report's SC split into its conditions, per split, with intervals."""

from __future__ import annotations

import json

import pytest

from experiments.conditions import condition_rates, main


def example(**conditions: float) -> dict:
    return {"SC": min(conditions.values()), "conditions": conditions}


SETS = [
    # in-domain: the subject alone is read, in both sets
    {"name": "subject_driven", "split": "in-domain", "examples": [example(text=1.0, subject=1.0)] * 2},
    {
        "name": "faces",
        "split": "in-domain",
        "examples": [example(text=1.0, subject=1.0), example(text=0.0, subject=0.5)],
    },
    # zero-shot: beside a style reference, the subject is lost and the style kept
    {
        "name": "style+subject",
        "split": "zero-shot",
        "examples": [example(text=1.0, subject=0.0, style=1.0), example(text=1.0, subject=0.5, style=1.0)],
    },
]


def test_each_condition_is_the_mean_of_its_sets_means() -> None:
    rates = condition_rates(SETS)
    subject, _, n, sets = rates["in-domain"]["subject"]
    assert subject == pytest.approx((1.0 + 0.75) / 2) and (n, sets) == (4, 2)
    assert rates["in-domain"]["SC"][0] == pytest.approx((1.0 + 0.5) / 2)  # faces: SC 1 and min(0, 0.5)
    assert rates["zero-shot"]["subject"][0] == pytest.approx(0.25)
    assert rates["zero-shot"]["style"][0] == 1.0 and "style" not in rates["in-domain"]
    low, high = rates["zero-shot"]["subject"][1]
    assert low <= 0.25 <= high


def test_the_script_prints_a_row_per_split_and_condition_with_sc_last(tmp_path, capsys) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"models": [{"label": "m", "sets": SETS}]}))
    assert main([str(path)]) == 0
    rows = [line.split(" | ")[1:3] for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == [
        ["in-domain", "subject"],
        ["in-domain", "text"],
        ["in-domain", "SC"],
        ["zero-shot", "style"],
        ["zero-shot", "subject"],
        ["zero-shot", "text"],
        ["zero-shot", "SC"],
    ]
