"""The evaluation harness on a world small enough to know every answer (`eval_suite_fixture.fake_suite`, models that
draw instead of sample): bootstrap intervals, paired comparisons, chance baselines and their flag, the context
ablation, attribute pass rates, the editing table, PQ's duplicate exclusion and the sampler choice."""

from __future__ import annotations

import json
import math

import pytest
import torch
from eval_suite_fixture import FakeModel, draw

from zoo.cli import main
from zoo.eval import evaluate as evaluate_module
from zoo.eval.bootstrap import mean_interval, separation, table4_intervals
from zoo.eval.features import HandcraftedFeatures
from zoo.eval.quality import RealismPQ

SIZE = 16
FAKE = ["--suite", "eval_suite_fixture:fake_suite", "--features", "handcrafted"]


# ------------------------------------------------------------------------------------------------------ bootstrap
def test_intervals_contain_the_mean_and_shrink_with_n() -> None:
    pattern = [1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0, 0.5]  # mean 0.625
    widths = []
    for repeats in (1, 4, 16):
        low, high = mean_interval([pattern * repeats])
        assert low < 0.625 < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.5 * widths[0]  # ~1/√16 of it, up to resampling noise
    assert mean_interval([pattern]) == mean_interval([pattern])  # fixed seed: the same interval every time
    assert all(math.isnan(v) for v in mean_interval([[1.0]]))  # one example cannot be resampled: NaN


def test_overall_intervals_recompute_o_from_each_resample() -> None:
    sc, pq = [1.0, 0.0, 1.0, 0.5], [0.9, 0.5, 0.7, 0.6]
    intervals = table4_intervals([(sc, pq)])
    o = (0.625 * 0.675) ** 0.5
    assert intervals["SC"][0] < 0.625 < intervals["SC"][1] and intervals["O"][0] < o < intervals["O"][1]
    assert intervals["O"][1] <= 1.0 and intervals["O"][0] >= 0.0
    # a split average resamples within each set: two sets, one certain, one not
    average = table4_intervals([([1.0] * 4, [1.0] * 4), (sc, pq)])
    assert average["SC"][0] < (1 + 0.625) / 2 < average["SC"][1]
    assert average["SC"][1] - average["SC"][0] < intervals["SC"][1] - intervals["SC"][0]


def test_a_paired_difference_separates_a_better_model_and_not_identical_ones() -> None:
    worse = [1.0 if k % 4 == 0 else 0.0 for k in range(32)]  # SC 0.25
    better = [1.0 if k % 4 else 0.0 for k in range(32)]  # SC 0.75, on the same examples
    pq = [0.5] * 32
    bounds = table4_intervals([(better, pq)], [(worse, pq)])
    assert bounds["SC"][0] > 0 and separation(0.5, bounds["SC"]) == 1
    assert separation(-0.5, table4_intervals([(worse, pq)], [(better, pq)])["SC"]) == -1
    same = table4_intervals([(better, pq)], [(better, pq)])
    assert same["SC"][0] <= 0 <= same["SC"][1] and separation(0.0, same["SC"]) == 0
    with pytest.raises(ValueError, match="same examples"):
        table4_intervals([(better, pq)], [(worse[:8], pq[:8])])


# ------------------------------------------------------------------------------------------ the harness, end to end
@pytest.fixture
def fake_models(monkeypatch):
    """`evaluate` loads FakeModel(kind) for a checkpoint file named after its kind ("good.ckpt", "blind.ckpt")."""
    loaded = {}

    def load(path):
        loaded[path.stem] = FakeModel(path.stem.rstrip("0123456789"), SIZE)
        return loaded[path.stem]

    monkeypatch.setattr(evaluate_module, "load_model", load)
    return loaded


def checkpoints(tmp_path, *names: str) -> list[str]:
    args = []
    for name in names:
        (tmp_path / f"{name}.ckpt").write_bytes(b"")
        args += ["--ckpt", f"{name}={tmp_path / f'{name}.ckpt'}"]
    return args


@pytest.fixture
def report(fake_models, tmp_path, capsys) -> tuple[dict, str, str]:
    out = tmp_path / "eval"
    models = checkpoints(tmp_path, "good", "blind", "good2")
    assert main(["evaluate", *models, *FAKE, "--n", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text(), printed


def _model(report: dict, label: str) -> dict:
    return next(m for m in report["models"] if m["label"] == label)


def _set(entry: dict, name: str) -> dict:
    return next(s for s in entry["sets"] if s["name"] == name)


def test_chance_baselines_are_scored_beside_the_models_and_flag_what_they_match(report) -> None:
    results, markdown, printed = report
    baselines = {b["label"]: b for b in results["baselines"]}
    assert list(baselines) == ["mean colour", "first reference", "another target", "background"]
    with_context = ["square+colour", "colour zero-shot", "recolour"]
    assert [s["name"] for s in baselines["first reference"]["sets"]] == with_context
    for baseline in baselines.values():
        assert all(row["SC"] == 0 for row in baseline["sets"])  # the fake world's scorer is not fooled by chance
    first_reference = _set(baselines["first reference"], "square+colour")
    assert first_reference["attributes"] == {"position": 0.0, "colour": 1.0}  # the reference holds the colour only
    # the blind model (SC 0 where a reference holds the colour) is no better than chance there; the good one is
    flagged = {(f["model"], f["set"]) for f in results["flags"]}
    assert ("blind", "square+colour") in flagged and not any(model == "good" for model, _ in flagged)
    assert set(next(f for f in results["flags"] if f["model"] == "blind")["baselines"]) == set(baselines)
    assert "| square+colour ⚑ |" in markdown and "| square |" in markdown
    assert "- ⚑ **square+colour**: `blind` SC 0.00 ≤ baseline `mean colour` 0.00" in markdown
    assert "|  | *background* (baseline) |" in markdown
    assert "*first reference* (baseline) (over 1 of 2 sets)" in markdown  # its average covers the sets it applies to
    assert markdown in printed  # the CLI prints the report it writes


def test_the_context_ablation_shows_which_model_reads_its_context(report, fake_models) -> None:
    results, markdown, _ = report
    good, blind = _model(results, "good")["ablation"], _model(results, "blind")["ablation"]
    row = _set(good, "square+colour")
    assert (row["with context"], row["without context"], row["drop"]) == (1.0, 0.0, 1.0)
    assert row["drop interval"] == [1.0, 1.0] and row["SC without context"] == 0.0
    assert _set(blind, "square+colour")["drop"] == 0.0
    text_only = _set(good, "square")
    assert text_only["drop"] is None and text_only["SC without context"] == 1.0  # no context condition: "–"
    assert good["averages"]["in-domain"]["sets with context"] == 1 and good["averages"]["in-domain"]["drop"] == 1.0
    assert "| square | in-domain | good | – | – | – | 1.00 [1.00, 1.00] |" in markdown
    assert "| square+colour | in-domain | good | 1.00 | 0.00 | +1.00 [+1.00, +1.00] | 0.00 [0.00, 0.00] |" in markdown
    # same seeds with and without context; the text-only set is not sampled twice
    calls = fake_models["good"].calls
    assert len(calls) == 4 + 3 and [c["seed"] for c in calls[4:]] == [1000, 2000, 3000]


def test_comparisons_state_beats_only_when_the_interval_excludes_zero(report) -> None:
    results, markdown, _ = report
    verdicts = {(c["a"], c["b"]): c["averages"] for c in results["comparisons"] if not c["b is baseline"]}
    assert verdicts[("good", "blind")]["in-domain"]["SC"]["verdict"] == "good beats blind"
    assert verdicts[("good", "blind")]["in-domain"]["SC"]["difference"] == pytest.approx(0.5)
    assert verdicts[("good", "good2")]["in-domain"]["SC"]["verdict"] == "no separation"
    assert verdicts[("blind", "good2")]["zero-shot"]["SC"]["verdict"] == "good2 beats blind"
    versus_chance = next(c for c in results["comparisons"] if c["a"] == "good" and c["b"] == "mean colour")
    assert versus_chance["b is baseline"] and versus_chance["averages"]["in-domain"]["SC"]["verdict"] == (
        "good beats baseline mean colour"
    )
    assert "- `good` vs `blind`, in-domain SC: **good beats blind** (+0.50 [" in markdown
    assert "- `good` vs `good2`, in-domain SC: **no separation** (+0.00 [+0.00, +0.00])" in markdown
    assert "| good | *mean colour* | +1.00 [+1.00, +1.00]: good beats baseline mean colour |" in markdown


def test_intervals_attribute_rates_and_the_editing_table(report) -> None:
    results, markdown, _ = report
    good, blind = _model(results, "good"), _model(results, "blind")
    row = _set(good, "square+colour")
    assert row["SC"] == 1.0 and row["intervals"]["SC"] == [1.0, 1.0]
    assert row["intervals"]["PQ"][0] <= row["PQ"] <= row["intervals"]["PQ"][1]
    assert _set(blind, "square+colour")["attributes"] == {"position": 1.0, "colour": 0.0}  # partial learning shows
    assert _set(good, "square")["attributes"] == {"position": 1.0}
    assert "| set | model | position | colour |" in markdown
    # editing is its own split: its own table and average, not part of in-domain
    assert set(good["averages"]) == {"in-domain", "zero-shot", "editing"}
    assert good["averages"]["in-domain"]["sets"] == 2 and good["averages"]["editing"]["sets"] == 1
    assert markdown.index("## Editing") > markdown.index("## Zero-shot")
    editing_table = markdown[markdown.index("## Editing") :].split("\n## ")[0]
    assert "| recolour ⚑ | good |" in editing_table and "square+colour" not in editing_table


# ------------------------------------------------------------------------------------------------ PQ duplicates
def test_pq_excludes_every_copy_of_the_examples_target() -> None:
    # genuine images come in near pairs (s_real is high); a has an exact copy and no near neighbour
    a = draw("left", (-0.8, -0.6, -0.8), SIZE)
    b, b2 = draw("right", (0.2, -0.6, -0.5), SIZE), draw("right", (0.25, -0.6, -0.5), SIZE)
    c, c2 = draw("left", (0.6, 0.4, 0.0), SIZE), draw("left", (0.6, 0.45, 0.0), SIZE)
    pq = RealismPQ(HandcraftedFeatures(), torch.stack([a, a.clone(), b, b2, c, c2]))
    assert pq.copies[0] == [0, 1] and pq.copies[2] == [2]
    (copy_of_a,) = pq(a[None], [0])
    assert copy_of_a < 1.0  # with only its own index excluded, the copy at index 1 gave a perfect 1
    assert pq(a[None], [1]) == [copy_of_a]
    assert pq(b[None], [0]) == [1.0]  # a genuine image of another example is still genuine


# --------------------------------------------------------------------------------------------------- samplers
def test_any_named_sampler_is_accepted_and_overridable(fake_models, tmp_path, capsys) -> None:
    from diffusers import DDPMScheduler, UniPCMultistepScheduler

    args = ["evaluate", *checkpoints(tmp_path, "good"), *FAKE, "--n", "2", "--out", str(tmp_path / "a")]
    assert main([*args, "--sampler", "paper"]) == 0
    (call, *_) = fake_models["good"].calls
    assert call["num_inference_steps"] == 256 and call["guidance"].scale == 25.0 and call["guidance"].oscillate
    assert isinstance(call["scheduler"], DDPMScheduler)
    assert main([*args, "--sampler", "unipc", "--steps", "3", "--guidance", "2"]) == 0
    (call, *_) = fake_models["good"].calls
    assert (call["num_inference_steps"], call["guidance"].scale) == (3, 2.0)
    assert isinstance(call["scheduler"], UniPCMultistepScheduler)
    assert "sampler: unipc. sampling steps: 3. guidance: 2.0." in capsys.readouterr().out
    assert main([*args, "--steps", "5"]) == 0  # no --sampler: the model's own sampling, as before
    (call, *_) = fake_models["good"].calls
    assert call == {"num_inference_steps": 5, "guidance": None, "seed": 0}

    assert main([*args, "--sampler", "unipc", "--guidance", "2", "--context-guidance", "4"]) == 0
    (call, *_) = fake_models["good"].calls
    assert (call["guidance"].scale, call["guidance"].context_scale) == (2.0, 4.0)
    assert "guidance: 2.0. context guidance: 4.0." in capsys.readouterr().out
    assert main([*args, "--context-guidance", "4"]) == 0  # the model's own sampling and text scale, the context's own
    (call, *_) = fake_models["good"].calls
    assert (call["guidance"].scale, call["guidance"].context_scale) == (3.0, 4.0)

    assert main([*args, "--sampler", "euler"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: --sampler 'euler' is unknown; choose one of ddpm, paper, dpmsolver++, sde-dpmsolver++, unipc\n"
    )
