"""Tests of the text refiner (`text_refiner`): it starts as the identity, it learns, it reads word order, and its
weights travel through export, `init_from` and load like the other new layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model, perturb_context_layers

from zoo.instruction import Instruction
from zoo.models.instruct_unet import REFINER
from zoo.models.text_refiner import TextRefiner
from zoo.pipeline import InstructImagenPipeline


def tokens_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    text = torch.randn(3, 10, 16, generator=g)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, :4], mask[1, :] = True, True  # the third text has no tokens (dropped for guidance)
    return text, mask


def test_an_untrained_refiner_is_the_identity() -> None:
    text, mask = tokens_and_mask()
    out = TextRefiner(16, layers=2)(text, mask)
    assert torch.allclose(out, text, atol=1e-6)
    assert torch.equal(out[~mask], text[~mask])  # padding (and a text without tokens) passes through as it came


def test_a_trained_refiner_reads_other_tokens_and_their_order() -> None:
    refiner = TextRefiner(16, layers=1)
    perturb_context_layers(torch.nn.ModuleDict({"context_layers": refiner}))
    text, mask = tokens_and_mask()
    out = refiner(text, mask)
    # another word elsewhere in the text changes this word's token (a random change: a constant one is normed away)
    other_word = torch.randn(16, generator=torch.Generator().manual_seed(1))
    changed = text.clone()
    changed[1, 5] += other_word
    assert not torch.allclose(refiner(changed, mask)[1, 0], out[1, 0])
    # the same words in another order are other tokens, not a permutation of the same ones
    order = torch.tensor([3, 2, 1, 0, 4, 5, 6, 7, 8, 9])
    swapped = refiner(text[:, order], mask)
    assert not torch.allclose(swapped[0, order], out[0], atol=1e-4)
    # padding never reaches a real token
    padded = text.clone()
    padded[0, 6] += other_word
    assert torch.equal(refiner(padded, mask)[0, :4], out[0, :4])


def test_a_model_with_a_refiner_starts_as_the_model_without_and_learns_it() -> None:
    plain, refined = build_tiny_model(), build_tiny_model(text_refiner=2)
    missing = refined.model.load_state_dict(plain.model.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(f"context_layers.{REFINER}.") for k in missing)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([100, 800])
    text, mask = torch.randn(2, 8, refined.text_encoder.dim, generator=g), torch.ones(2, 8, dtype=torch.bool)
    assert torch.allclose(plain.model(x, t, text, mask), refined.model(x, t, text, mask), atol=1e-5)
    refined.model(x, t, text, mask).pow(2).mean().backward()
    grads = [p.grad for p in refined.model.context_layers[REFINER].parameters()]
    assert any(grad is not None and grad.abs().sum() > 0 for grad in grads)  # the zero-init layers get a gradient


def test_refiner_weights_survive_export_init_from_and_load(tmp_path: Path) -> None:
    base = build_tiny_model(text_refiner=1)
    perturb_context_layers(base, 3)
    folder = InstructImagenPipeline(base).save_pretrained(tmp_path / "pipe")
    loaded = InstructImagenPipeline.from_pretrained(folder).base
    assert loaded.hparams.text_refiner == 1
    expected = base.model.state_dict()
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in expected.items())
    started = build_tiny_model(seed=5, text_refiner=1, init_from=str(folder))
    assert all(torch.equal(started.model.state_dict()[k], v) for k, v in expected.items())
    with pytest.raises(ValueError, match="has a 1-layer text refiner: set model.text_refiner 1"):
        build_tiny_model(init_from=str(folder))
    prompt = [Instruction("Draw a red circle on the left")]
    assert torch.equal(base.generate(prompt, num_inference_steps=2), loaded.generate(prompt, num_inference_steps=2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(layers=-1), "at least one layer, got -1"), (dict(layers=1, heads=5), "not a multiple of 5 heads")],
)
def test_bad_refiner_shapes_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TextRefiner(16, **kwargs)
