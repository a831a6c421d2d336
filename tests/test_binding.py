"""experiments/binding.py: text-to-image pass rates split into one- and two-object captions."""

from __future__ import annotations

import json

import pytest

from experiments.binding import binding_rates, main


def example(sc: float, **checks: list[float]) -> dict:
    return {"SC": sc, "attributes": {"background": [1.0], **checks}}


EXAMPLES = [
    # one object: everything right
    example(1.0, colour=[1.0], shape=[1.0], pattern=[1.0], position=[1.0], size=[1.0]),
    example(1.0, colour=[1.0], shape=[1.0], pattern=[1.0], position=[1.0], size=[1.0]),
    # two objects: places right, the second object's colour and shape wrong
    example(0.5, colour=[1.0, 0.0], shape=[1.0, 0.0], pattern=[1.0, 1.0], position=[1.0, 1.0], size=[1.0, 1.0]),
    example(0.0, colour=[0.0, 0.0], shape=[0.0, 1.0], pattern=[1.0, 1.0], position=[1.0, 1.0], size=[1.0, 1.0]),
]


def test_rates_are_split_by_object_count_and_averaged_over_objects() -> None:
    rates = binding_rates(EXAMPLES)
    assert rates["one object"]["colour"][0] == 1.0 and rates["one object"]["SC"][2] == 2
    two = rates["two objects"]
    assert two["colour"][0] == pytest.approx(0.25) and two["shape"][0] == pytest.approx(0.5)
    assert two["position"][0] == 1.0 and two["SC"][0] == pytest.approx(0.25)
    low, high = two["colour"][1]
    assert low <= 0.25 <= high


def test_the_script_prints_a_row_per_model_and_object_count(tmp_path, capsys) -> None:
    report = {"models": [{"label": "m", "sets": [{"name": "text_to_image", "examples": EXAMPLES}]}]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| m | one object | 2 | 1.00") and lines[3].startswith("| m | two objects | 2 | 0.25")
    with pytest.raises(SystemExit):
        main([str(path), "--set", "edge_to_image"])
