"""Backbones and text encoders: presets, `list models`, init_from (Lightning, diffusers/IF folders, errors), text
encoders by class_path with marker tokens, the text-embedding cache, and the context-gradient option."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_SIZE, TEXT_MAX_LENGTH, build_tiny_model
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from zoo.instruction import collate_instructions
from zoo.lit.module import InstructImagen
from zoo.models.presets import PRESETS, count_parameters, paper_base128, resolve_unet_config
from zoo.models.text import TextEncoder
from zoo.models.text_cache import TextEmbeddingCache


def if_shaped_config() -> dict:
    """A tiny DeepFloyd-IF-shaped UNet (the block types, text projection and pooled text embedding of IF)."""
    return dict(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        attention_head_dim=8,
        cross_attention_dim=64,
        encoder_hid_dim=32,  # the tiny T5's width, projected to 64 as IF projects T5-XXL's 4096
        encoder_hid_dim_type="text_proj",
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        norm_num_groups=8,
    )


def saved_if_unet(folder: Path, seed: int = 1, **overrides) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**if_shaped_config(), **overrides}).eval()
    unet.save_pretrained(folder)
    return unet


# ------------------------------------------------------------------------------------------------------ presets
def test_list_models_prints_every_preset_with_resolution_and_count(capsys) -> None:
    from zoo.cli import main

    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for name, preset in PRESETS.items():
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert str(preset()["sample_size"]) in line.split()
    tiny = UNet2DConditionModel(**resolve_unet_config("tiny"))
    assert count_parameters(resolve_unet_config("tiny")) == sum(p.numel() for p in tiny.parameters())
    assert main(["list", "nothing"]) == 2


def test_paper_base128_is_table5_in_diffusers_terms() -> None:
    from zoo.models.instruct_unet import InstructUNet

    config = paper_base128()
    with torch.device("meta"):  # 3B parameters: never allocated
        model = InstructUNet(UNet2DConditionModel(**config))
    unet = model.unet
    # 8 single-ResNet blocks at 64, 32 and 16 px with 512/1024/2048 channels; the 128 px level is the stem only.
    assert [len(block.resnets) for block in unet.down_blocks] == [0, 8, 8, 8]
    assert [block.resnets[0].out_channels for block in unet.down_blocks[1:]] == [512, 1024, 2048]
    # attention only in the deepest level, at 128 / 2**3 = 16 px, one per ResNet
    assert [len(getattr(block, "attentions", [])) for block in unet.down_blocks] == [0, 0, 0, 8]
    assert len(model.context_layers) == 8 + 1 + 9
    backbone = sum(p.numel() for p in unet.parameters())
    assert backbone == count_parameters(config) and 2.9e9 < backbone < 3.1e9  # paper: 2.51B (see presets docstring)
    assert 0.25e9 < sum(p.numel() for p in model.context_layers.parameters()) < 0.35e9  # paper: 0.25B


def test_unet_from_a_diffusers_folder(tmp_path: Path) -> None:
    saved_if_unet(tmp_path / "unet")
    model = build_tiny_model(unet=str(tmp_path))  # a pipeline folder: its unet/config.json
    assert model.model.unet.config.down_block_types[1] == "SimpleCrossAttnDownBlock2D"
    with pytest.raises(ValueError, match="tiny"):
        build_tiny_model(unet=str(tmp_path / "nowhere"))


# ------------------------------------------------------------------------------------------- init_from: IF round trip
@torch.no_grad()
def test_if_format_round_trip_gives_identical_outputs(tmp_path: Path, task_instructions) -> None:
    saved = saved_if_unet(tmp_path / "unet")
    model = build_tiny_model(unet=if_shaped_config(), init_from=str(tmp_path)).eval()
    report = model.init_report
    assert report.kind == "diffusers" and report.new_keys
    assert all(key.startswith("model.context_layers.") for key in report.new_keys)
    assert len(model.model.context_layers) == 4  # down, mid and the two up attentions of the 16→8 px stage
    batch = collate_instructions(task_instructions)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), torch.tensor([10, 500, 990])
    text, text_mask = model.encode_text(batch.texts)
    # Every token real: diffusers' pooled text embedding (IF's) also pools padding, ours leaves it out
    # (MaskedAttentionPooling); on unpadded text the two are the same function of the same weights.
    text_mask = torch.ones_like(text_mask)
    context = model.encode_context(batch)  # the IF-shaped down stack encodes the context (text projection, pooling)
    assert context.mask.any()
    expected = saved(x, t, encoder_hidden_states=text, encoder_attention_mask=text_mask).sample
    # 1e-5: the pooling computes the same attention through SDPA instead of diffusers' matmuls (float32 rounding)
    torch.testing.assert_close(model.model(x, t, text, text_mask, None), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.model(x, t, text, text_mask, context), expected, atol=1e-5, rtol=0)


def test_init_from_a_lightning_checkpoint(tmp_path: Path) -> None:
    source = build_tiny_model(seed=3)
    torch.save(
        {"state_dict": {k: v for k, v in source.state_dict().items() if "context_layers" not in k}}, tmp_path / "a.ckpt"
    )
    model = build_tiny_model(seed=4, init_from=str(tmp_path / "a.ckpt"))
    assert model.init_report.kind == "lightning"
    for key, value in source.model.unet.state_dict().items():
        assert torch.equal(model.model.unet.state_dict()[key], value)


def test_init_from_wrong_shapes_lists_keys_and_both_shapes(tmp_path: Path) -> None:
    other = UNet2DConditionModel(**{**if_shaped_config(), "block_out_channels": (16, 64)})
    save_file(other.state_dict(), str(tmp_path / "unet.safetensors"))
    with pytest.raises(ValueError) as info:
        build_tiny_model(unet=if_shaped_config(), init_from=str(tmp_path / "unet.safetensors"))
    message = str(info.value)
    assert (
        "mismatched shapes" in message
        and "model.unet.conv_in.weight: file (16, 3, 3, 3) vs model (32, 3, 3, 3)" in message
    )


def test_init_from_a_folder_whose_config_differs_names_the_fields(tmp_path: Path) -> None:
    saved_if_unet(tmp_path, cross_attention_dim=32)
    with pytest.raises(ValueError, match=r"cross_attention_dim: folder 32 vs model 64"):
        build_tiny_model(unet=if_shaped_config(), init_from=str(tmp_path))


def test_init_from_missing_keys_and_pickles_are_refused(tmp_path: Path) -> None:
    state = build_tiny_model().state_dict()
    del state["model.unet.conv_out.bias"]
    torch.save({"state_dict": state}, tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match=r"1 missing keys: model\.unet\.conv_out\.bias"):
        build_tiny_model(init_from=str(tmp_path / "m.ckpt"))
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"_class_name": "UNet2DConditionModel", **resolve_unet_config("tiny")})
    )
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="pickle files are never loaded"):
        build_tiny_model(init_from=str(folder))
    with pytest.raises(ValueError, match="does not exist"):
        build_tiny_model(init_from=str(tmp_path / "nothing.ckpt"))


def test_text_width_mismatch_names_both_numbers() -> None:
    config = {**if_shaped_config(), "encoder_hid_dim": 64}
    with pytest.raises(ValueError, match=r"32-d embeddings but the UNet reads 64-d text \(encoder_hid_dim 64\)"):
        build_tiny_model(unet=config)


# ------------------------------------------------------------------------------------------------ text encoders
def test_t5_sentinel_markers() -> None:
    encoder = TextEncoder("builtin:tiny-t5", max_length=TEXT_MAX_LENGTH)
    assert encoder.markers == "sentinel"
    for n in (1, 2, 7):
        assert encoder.marker_tokens(n) == [encoder.tokenizer.convert_tokens_to_ids(f"<extra_id_{n - 1}>")]
    one, _ = encoder(["draw [ref#1] in red"])
    two, _ = encoder(["draw [ref#2] in red"])
    assert (one - two).abs().max() > 1e-3
    plain = TextEncoder("builtin:tiny-t5", max_length=TEXT_MAX_LENGTH, markers="plain")
    assert len(plain.marker_tokens(1)) == len("[ref#1]")  # bytes: the marker is ordinary text
    with pytest.raises(ValueError, match=r"\[ref#500\]"):
        encoder(["draw [ref#500]"])


def write_tiny_bert(folder: Path) -> None:
    """A small BERT with a WordPiece vocabulary written here: no download."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True)
    words = "draw a red blue circle square in the style of image toy".split()
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[", "]", "#", *words, *"0123456789"])
    )
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(
        BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ).save_pretrained(folder)


def test_bert_encoder_with_added_marker_tokens(tmp_path: Path) -> None:
    write_tiny_bert(tmp_path / "bert")
    encoder = TextEncoder(str(tmp_path / "bert"), max_length=16)
    assert encoder.markers == "added_tokens"
    ids = [encoder.marker_tokens(n) for n in (1, 2)]
    assert all(len(i) == 1 for i in ids) and ids[0] != ids[1]
    one, mask = encoder(["draw [ref#1] toy"])
    two, _ = encoder(["draw [ref#2] toy"])
    assert mask.sum() == 5 and (one - two).abs().max() > 1e-3  # [CLS] draw [ref#1] toy [SEP]
    again, _ = TextEncoder(str(tmp_path / "bert"), max_length=16)(["draw [ref#1] toy"])
    torch.testing.assert_close(again, one, atol=0, rtol=0)  # the added rows are seeded: a rebuild is identical
    with pytest.raises(ValueError, match="sentinel"):
        TextEncoder(str(tmp_path / "bert"), markers="sentinel")
    model = build_tiny_model(text_encoder=TextEncoder(str(tmp_path / "bert"), max_length=TEXT_MAX_LENGTH))
    assert model.hparams.text_encoder["class_path"] == "zoo.models.text.TextEncoder"


def test_text_max_length_must_agree_with_an_encoder_instance() -> None:
    with pytest.raises(ValueError, match="text_max_length=8 disagrees"):
        build_tiny_model(text_encoder=TextEncoder("builtin:tiny-t5", max_length=16), text_max_length=8)


def test_class_path_text_encoder_through_lightning_cli_and_checkpoint_reload(tmp_path: Path) -> None:
    from zoo.cli import main

    recipe = {
        "seed_everything": 0,
        "trainer": {
            "default_root_dir": str(tmp_path),
            "max_steps": 1,
            "limit_val_batches": 0,
            "logger": False,
            "enable_progress_bar": False,
            "accelerator": "cpu",
        },
        "model": {
            "unet": "tiny",
            "text_encoder": {
                "class_path": "zoo.models.text.TextEncoder",
                "init_args": {"name_or_path": "builtin:tiny-t5", "max_length": 16, "seed": 5},
            },
        },
        "data": {
            "image_size": IMAGE_SIZE,
            "batch_size": 2,
            "samples_per_epoch": 2,
            "val_samples": 2,
            "tasks": [
                {
                    "class_path": "tasks.text_to_image.TextToImage",
                    "init_args": {"num_examples": 40, "image_size": IMAGE_SIZE},
                }
            ],
        },
    }
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    assert main(["fit", "--config", str(tmp_path / "r.yaml")]) == 0
    ckpt = next(tmp_path.rglob("*.ckpt"))
    model = InstructImagen.load_from_checkpoint(ckpt, map_location="cpu")
    assert isinstance(model.text_encoder, TextEncoder) and model.text_encoder.init_args["seed"] == 5
    fresh = TextEncoder("builtin:tiny-t5", max_length=16, seed=5)
    torch.testing.assert_close(model.text_encoder(["a [ref#1] toy"])[0], fresh(["a [ref#1] toy"])[0], atol=0, rtol=0)


def test_encoder_instance_survives_a_plain_checkpoint(tmp_path: Path) -> None:
    from lightning.pytorch import Trainer

    model = build_tiny_model(text_encoder=TextEncoder("builtin:tiny-t5", max_length=TEXT_MAX_LENGTH, seed=2))
    trainer = Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = InstructImagen.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu")
    assert loaded.text_encoder.init_args == model.text_encoder.init_args
    assert loaded.text_encoder.fingerprint == model.text_encoder.fingerprint


# --------------------------------------------------------------------------------------------------- text cache
def count_encoder_calls(encoder: TextEncoder) -> list[int]:
    calls = [0]
    encoder.model.register_forward_pre_hook(lambda m, a, k: calls.__setitem__(0, calls[0] + 1), with_kwargs=True)
    return calls


def test_cache_is_built_once_and_read_without_the_encoder(tmp_path: Path) -> None:
    texts = ["", "draw a [ref#1] toy", "a red circle", "a [ref#1] style image"]
    model = build_tiny_model()
    direct = model.encode_text(texts)
    calls = count_encoder_calls(model.text_encoder)
    cache = TextEmbeddingCache(tmp_path, model.text_encoder)
    assert cache.build(model.text_encoder, texts, batch_size=3) == 4 and calls[0] == 2
    again = TextEmbeddingCache(tmp_path, model.text_encoder)
    assert again.build(model.text_encoder, texts) == 0 and calls[0] == 2  # second run: nothing to embed
    cached_model = build_tiny_model(text_cache=str(tmp_path))
    calls = count_encoder_calls(cached_model.text_encoder)
    embeddings, mask = cached_model.encode_text(texts[::-1])
    assert calls[0] == 0
    assert torch.equal(embeddings, direct[0].flip(0)) and torch.equal(mask, direct[1].flip(0))
    cached_model.encode_text(["a text not in the cache", texts[1]])
    assert calls[0] == 1 and cached_model.text_cache.misses == 1
    copied = copy.deepcopy(cached_model)  # as Lightning's EMA does: open shard handles must not break it
    assert torch.equal(copied.encode_text(texts)[0], direct[0])


def test_another_encoder_gets_no_stale_hits(tmp_path: Path) -> None:
    first = TextEncoder("builtin:tiny-t5", max_length=TEXT_MAX_LENGTH, seed=0)
    TextEmbeddingCache(tmp_path, first).build(first, ["a red circle"])
    for other in (
        TextEncoder("builtin:tiny-t5", max_length=TEXT_MAX_LENGTH, seed=1),
        TextEncoder("builtin:tiny-t5", max_length=TEXT_MAX_LENGTH + 1, seed=0),
        TextEncoder("builtin:tiny-t5", max_length=TEXT_MAX_LENGTH, seed=0, markers="plain"),
    ):
        assert other.fingerprint != first.fingerprint
        assert "a red circle" not in TextEmbeddingCache(tmp_path, other)
    assert "a red circle" in TextEmbeddingCache(tmp_path, TextEncoder("builtin:tiny-t5", max_length=TEXT_MAX_LENGTH))


def test_cache_text_command(tmp_path: Path, capsys) -> None:
    from zoo.cli import main

    recipe = {
        "trainer": {"logger": False, "accelerator": "cpu"},
        "model": {
            "unet": "tiny",
            "text_encoder": "builtin:tiny-t5",
            "text_max_length": 16,
            "text_cache": str(tmp_path / "cache"),
        },
        "data": {
            "image_size": IMAGE_SIZE,
            "tasks": [
                {
                    "class_path": "tasks.styled_generation.StyledGeneration",
                    "init_args": {"num_examples": 40, "image_size": IMAGE_SIZE},
                }
            ],
        },
    }
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    assert main(["cache-text", "--config", str(tmp_path / "r.yaml"), "--limit", "5"]) == 0
    first = capsys.readouterr().out
    assert main(["cache-text", "--config", str(tmp_path / "r.yaml"), "--limit", "5"]) == 0
    second = capsys.readouterr().out
    added = int(first.split(" newly")[0].split()[-1])
    assert added > 5 and " 0 newly embedded" in second  # payloads, context texts and the empty text


# ------------------------------------------------------------------------------------------------- context_grad
def test_no_grad_context_keeps_only_the_denoising_path_gradients(task_batch) -> None:
    grads = {}
    for mode in ("end_to_end", "no_grad", "detached"):
        model = build_tiny_model(seed=0, context_grad="no_grad" if mode == "no_grad" else "end_to_end")
        init = torch.Generator().manual_seed(1)
        with torch.no_grad():  # trained context layers (the same in every mode), so the context path matters
            for layer in model.model.context_layers.values():
                layer.to_out.weight.copy_(0.5 * torch.randn(layer.to_out.weight.shape, generator=init))
        g = torch.Generator().manual_seed(0)
        x, t = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), torch.tensor([100, 500, 900])
        text, text_mask = model.encode_text(task_batch.texts)
        context = model.encode_context(task_batch)
        assert context.tokens.requires_grad == (mode != "no_grad")
        if mode == "detached":
            context.tokens = context.tokens.detach()
        model.model(x, t, text, text_mask, context).pow(2).mean().backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in model.model.unet.down_blocks.parameters()])
    assert grads["no_grad"].abs().sum() > 0  # the down blocks still learn, from the denoising path
    torch.testing.assert_close(grads["no_grad"], grads["detached"], atol=1e-7, rtol=1e-5)
    assert (grads["end_to_end"] - grads["no_grad"]).abs().max() > 1e-6  # end to end adds the context path
    with pytest.raises(ValueError, match="context_grad"):
        build_tiny_model(context_grad="sometimes")


def test_an_if_preset_takes_the_architecture_of_the_folder_it_starts_from(tmp_path: Path) -> None:
    """The IF presets' widths are fitted to the model cards; the real weights' config.json is the architecture."""
    saved = saved_if_unet(tmp_path / "unet")
    model = build_tiny_model(unet="if_stage1_xl", init_from=str(tmp_path)).eval()  # builds 0.6M, not 4.3B, parameters
    assert tuple(model.model.unet.config.block_out_channels) == saved.config.block_out_channels == (32, 64)
    for key, value in saved.state_dict().items():
        assert torch.equal(model.model.unet.state_dict()[key], value), key
    with pytest.raises(ValueError, match="block_out_channels"):  # any other preset still has to match the folder
        build_tiny_model(unet="tiny", init_from=str(tmp_path))
