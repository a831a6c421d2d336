"""Tests of `experiments/attention_binding.py`: word spans under byte- and word-level tokenizers, the scores of a
model that reads every token alike, and the command's tables and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model

from experiments.attention_binding import attention_binding, main, word_span
from zoo.pipeline import InstructImagenPipeline

TEXT = "a small blue checkered circle on the left and a large red solid square on the right"


@pytest.mark.parametrize("encoder", ["builtin:tiny-t5", "builtin:tiny-t5-words"])
def test_a_word_span_covers_exactly_that_words_tokens(encoder: str) -> None:
    module = build_tiny_model(text_encoder=encoder, text_max_length=128)
    tokenizer = module.text_encoder.tokenizer
    ids = tokenizer(TEXT)["input_ids"]
    for word in ("red", "blue"):  # "red" is the colour, not the end of "checkered"
        span = word_span(module.text_encoder, TEXT, word)
        assert tokenizer.decode([ids[i] for i in span]).strip() == word
        assert len(span) == (len(word) if encoder == "builtin:tiny-t5" else 1)


def test_a_model_that_reads_every_token_alike_scores_one_half() -> None:
    module = build_tiny_model(text_encoder="builtin:tiny-t5-words").eval()
    untrained = attention_binding(module, n=3, timesteps=[500]).binding[500]
    assert max(abs(s - 0.5) for s in untrained) > 1e-3  # random projections do prefer some words somewhere
    with torch.no_grad():
        for _, attention in module.model.context_stage_attentions():
            attention.to_q.weight.zero_()  # equal logits: every token gets the same attention everywhere
    reading = attention_binding(module, n=3, timesteps=[500])
    assert len(reading.binding[500]) == 6  # two objects per example
    assert all(abs(s - 0.5) < 1e-6 for s in reading.binding[500])
    # every kind of word is read exactly as much as its share of the tokens
    assert all(abs(r - 1.0) < 1e-5 for reads in reading.reads[500].values() for r in reads)


def test_the_command_prints_a_row_per_timestep_and_names_a_bad_checkpoint(tmp_path: Path, capsys) -> None:
    model = build_tiny_model(text_encoder="builtin:tiny-t5-words")
    folder = InstructImagenPipeline(model).save_pretrained(tmp_path / "m")
    assert main(["--ckpt", f"tiny={folder}", "--n", "2", "--t", "300", "700"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny |")]
    assert [row[1] for row in rows] == ["300", "700", "300", "700"]  # the binding table, then the reads table
    assert all(len(row) == 8 for row in rows[2:])  # model, t and six kinds of word
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "missing" in capsys.readouterr().err
