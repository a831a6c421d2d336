"""The built-in evaluation suite (`--suite builtin`): loads by its import string, covers every task (faces apart),
the four zero-shot compositions and editing in its own table, and scores each set's own ground truth at 1."""

from __future__ import annotations

from zoo.eval.suite import BUILTIN, semantic_consistency


def test_builtin_suite_covers_every_task_and_scores_its_ground_truth_at_one():
    from tasks.suites import builtin

    suite = builtin(n=2, image_size=32)
    in_domain = {s.name for s in suite.sets if s.split == "in-domain"}
    zero_shot = {s.name for s in suite.sets if s.split == "zero-shot"}
    assert {"text_to_image", "subject_driven", "faces", "styled_generation", "style_transfer"} <= in_domain
    assert {f"{c}_to_image" for c in ("edge", "depth", "mask", "sketch")} <= in_domain
    assert zero_shot == {"style+subject", "multi+subject", "control+subject", "control+style"}
    assert [s.name for s in suite.sets if s.split == "editing"] == ["editing"]  # never averaged into in-domain
    faces = next(s for s in suite.sets if s.name == "faces")
    assert all(i.meta["category"] == "person" for i in faces.instructions)
    for eval_set in suite.sets:
        for instruction in eval_set.instructions:
            assert semantic_consistency(suite.score(instruction.meta, instruction.target)) == 1.0, eval_set.name


def test_builtin_suite_is_the_default_import_string():
    assert BUILTIN == "tasks.suites:builtin"
