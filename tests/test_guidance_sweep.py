"""experiments/guidance_sweep.py (docs/learning.md, lever 10): one evaluation per guidance point, each passed to the
sampler, resumed from its report, and tabled against the reference with paired differences."""

from __future__ import annotations

from dataclasses import replace

from eval_suite_fixture import FakeModel, fake_suite

import zoo.eval.evaluate as evaluate_module
from experiments.guidance_sweep import main

SIZE = 16


def in_domain_only(n: int, image_size: int, seed: int = 0):
    """The fake suite without its zero-shot and editing sets (as `tasks.suites:text_to_image` has none)."""
    suite = fake_suite(n, image_size, seed)
    return replace(suite, sets=[s for s in suite.sets if s.split == "in-domain"])


def fake_model(monkeypatch) -> list:
    """Every model `evaluate` loads is a FakeModel; returns the list of their recorded calls."""
    calls = []

    def load(path):
        model = FakeModel("good", SIZE)
        calls.append(model.calls)
        return model

    monkeypatch.setattr(evaluate_module, "load_model", load)
    return calls


def test_each_point_is_evaluated_once_and_tabled_against_the_reference(monkeypatch, tmp_path, capsys) -> None:
    calls = fake_model(monkeypatch)
    (tmp_path / "good.ckpt").write_bytes(b"")
    args = [str(tmp_path / "good.ckpt"), "--suite", "eval_suite_fixture:fake_suite", "--n", "2"]
    args += ["--scales", "1,5", "--context-scales", "2", "--reference", "3", "--out", str(tmp_path / "sweep")]
    main(args)
    guidance = [(c[0]["guidance"].scale, c[0]["guidance"].context_scale) for c in calls]
    assert guidance == [(3.0, None), (1.0, 2.0), (5.0, 2.0)]  # the reference first, then scale × context scale
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["g1-c2", "g3", "g5-c2"]
    table = capsys.readouterr().out
    reference = next(line for line in table.splitlines() if line.startswith("| g3 |"))
    assert reference.split(" | ")[2] == "–"  # no difference to itself
    assert "| g1-c2 | " in table and "| g5-c2 | " in table

    calls.clear()
    main(args)  # every report is there: nothing is generated again, the same table is printed
    assert calls == [] and capsys.readouterr().out == table


def test_a_suite_without_a_split_shows_dashes_there(monkeypatch, tmp_path, capsys) -> None:
    fake_model(monkeypatch)
    (tmp_path / "good.ckpt").write_bytes(b"")
    main(
        [
            str(tmp_path / "good.ckpt"),
            "--suite",
            "test_guidance_sweep:in_domain_only",
            "--n",
            "2",
            "--scales",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| g1 |"))
    assert row.split(" | ")[3:5] == ["–", "–"]  # zero-shot SC and its difference
