"""The multi-task baseline's raw inputs keep every image and the content text, and drop the instruction wording."""

from __future__ import annotations

import torch

from experiments.raw_inputs import RawInputs, builtin_raw
from tasks.control import Control, control_caption
from tasks.scoring import scene_from_dict
from tasks.style_transfer import StyleTransfer
from tasks.subject_driven import SubjectDriven
from tasks.suites import builtin


def test_raw_inputs_keep_images_and_content_but_not_the_instruction() -> None:
    task = Control(condition="depth", num_examples=4, image_size=16)
    raw, instructed = RawInputs(task)[1], task[1]
    assert torch.allclose(raw.target, instructed.target, atol=1e-6) and raw.meta == instructed.meta
    assert [c.marker for c in raw.context] == [c.marker for c in instructed.context]
    assert all(torch.allclose(a.image, b.image, atol=1e-6) for a, b in zip(raw.context, instructed.context))
    payload = control_caption(scene_from_dict(instructed.meta["scene"]))  # what the template was filled with
    assert raw.text == f"{payload} [ref#1]" and raw.context[0].text == "[ref#1]"
    assert "depth" not in raw.text and "depth" in instructed.text + instructed.context[0].text
    subject = RawInputs(SubjectDriven(num_examples=4, image_size=16))[0]
    assert subject.text.startswith("[ref#1] ")  # the subject's marker and name are content
    assert RawInputs(StyleTransfer(num_examples=4, image_size=16))[0].text == "[ref#1] [ref#2]"


def test_raw_suite_matches_the_builtin_suite() -> None:
    raw, plain = builtin_raw(n=2, image_size=16), builtin(n=2, image_size=16)
    assert [(s.name, s.split, s.family) for s in raw.sets] == [(s.name, s.split, s.family) for s in plain.sets]
    for r, p in zip(raw.sets, plain.sets):
        assert torch.allclose(r.instructions[0].target, p.instructions[0].target, atol=1e-6)
        assert r.instructions[0].text != p.instructions[0].text
