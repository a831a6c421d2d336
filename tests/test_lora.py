"""LoRA: targets and trainable parameters; adapter export, strict loading, info, mixing, merging and interop.

A LoRA "run" here is a tiny model whose adapters got random non-zero weights, saved as a Lightning-style
checkpoint: the IO is tested without training (training with LoRA is covered in test_resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import IMAGE_SIZE, build_tiny_model
from zoo import lora_io
from zoo.cli import main as zoo_main
from zoo.lit.module import InstructImagen
from zoo.lora import LoraSpec, count_parameters

RANK = 4


def lora_checkpoint(path: Path, seed: int = 1, **spec) -> tuple[Path, InstructImagen]:
    """A checkpoint of a tiny LoRA model with random adapter weights (its base is build_tiny_model(seed=0))."""
    model = build_tiny_model(lora={"rank": RANK, **spec})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "global_step": 7}, path)
    return path, model.eval()


def denoise(model: InstructImagen) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    text, mask = model.encode_text(["a red circle", "a blue square"])
    with torch.no_grad():
        return model.model(x, torch.tensor([10, 500]), text, mask)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, InstructImagen]:
    root = tmp_path_factory.mktemp("lora")
    ckpt, model = lora_checkpoint(root / "run" / "last.ckpt")
    lora_io.export(ckpt, root / "adapter", diffusers=True, num_samples=0)
    return ckpt, root / "adapter", model


# ------------------------------------------------------------------------------------------------ targets
def test_lora_trains_only_adapters_on_attention_and_context_layers() -> None:
    model = build_tiny_model(lora=LoraSpec(rank=RANK))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert any("context_layers." in n and ".to_out.lora_A" in n for n in trainable)  # the new layers are adapted
    assert any(".attn2.to_out.0.lora_A" in n for n in trainable)  # and the backbone's attention
    # 16 attention layers × 4 projections (tiny: 4 transformer blocks × 2 attentions) + 4 context layers × 4
    n_layers = len({n.split(".lora_")[0] for n in trainable})
    assert n_layers == 48
    assert count_parameters(model)[0] == sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)


def test_lora_starts_at_the_base_model() -> None:
    torch.testing.assert_close(denoise(build_tiny_model(lora={"rank": RANK})), denoise(build_tiny_model()), atol=1e-6, rtol=0)


def test_unmatched_target_lists_the_closest_module_names() -> None:
    with pytest.raises(ValueError, match=r"'to_qq' matches no linear layer.*'to_q'"):
        build_tiny_model(lora={"targets": ["to_qq"]})
    with pytest.raises(ValueError, match="unknown target set"):
        LoraSpec(targets="everything")


def test_explicit_targets_select_only_those_layers() -> None:
    model = build_tiny_model(lora={"targets": ["attn2.to_k"]})
    layers = {n.split(".lora_")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert layers and all(n.endswith("attn2.to_k") for n in layers)


# ------------------------------------------------------------------------------------------------- export
def test_export_writes_peft_folder_manifest_and_card(exported) -> None:
    ckpt, folder, _ = exported
    assert {p.name for p in (folder / "base").iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "pytorch_lora_weights.safetensors"}
    manifest = json.loads((folder / "zoo_adapter.json").read_text())
    assert manifest["stages"]["base"]["rank"] == RANK and manifest["stages"]["base"]["layers"] == 48
    assert manifest["stages"]["base"]["fingerprint"] == lora_io.model_fingerprint(build_tiny_model())
    assert manifest["global_step"] == 7 and manifest["lora"]["rank"] == RANK
    card = (folder / "README.md").read_text()
    assert card.startswith("---") and "library_name: peft" in card and manifest["stages"]["base"]["fingerprint"] in card
    keys = load_file(folder / "base" / "adapter_model.safetensors")
    assert all(k.startswith("base_model.model.") and ".lora_" in k for k in keys)


def test_info_reads_the_folder_alone(exported, monkeypatch) -> None:
    _, folder, _ = exported
    monkeypatch.setattr(InstructImagen, "__init__", lambda *a, **k: pytest.fail("info must not build a model"))
    summary = lora_io.info(folder)
    assert summary["stages"]["base"]["rank"] == RANK
    assert summary["stages"]["base"]["parameters"] == 48 * 2 * RANK * 32
    assert zoo_main(["lora", "info", str(folder)]) == 0


def test_loaded_adapter_reproduces_the_lora_model(exported) -> None:
    _, folder, lora_model = exported
    base = build_tiny_model()
    before = denoise(base)
    lora_io.load_adapters(base, [(folder, 1.0)])
    after = denoise(base)
    assert (after - before).abs().max() > 1e-3  # the adapter does something
    torch.testing.assert_close(after, denoise(lora_model), atol=1e-5, rtol=0)


def test_adapter_folder_is_plain_peft_and_diffusers(exported) -> None:
    from diffusers import UNet2DConditionModel
    from peft import PeftModel

    from zoo.models.presets import resolve_unet_config

    _, folder, lora_model = exported
    peft_model = PeftModel.from_pretrained(build_tiny_model().model, folder / "base")
    assert sum(".lora_A" in n for n, _ in peft_model.named_parameters()) == 48
    unet = UNet2DConditionModel(**resolve_unet_config("tiny"))
    unet.load_lora_adapter(str(folder / "base" / "pytorch_lora_weights.safetensors"), prefix="unet")
    assert sum(".lora_A" in n for n, _ in unet.named_parameters()) == 32  # the backbone's 32 attention projections


# ----------------------------------------------------------------------------------------------- bad input
def test_another_base_is_refused_naming_both_fingerprints(exported) -> None:
    _, folder, _ = exported
    other = build_tiny_model(seed=3)
    theirs = json.loads((folder / "zoo_adapter.json").read_text())["stages"]["base"]["fingerprint"]
    with pytest.raises(ValueError, match=rf"made for base {theirs}.*base is {lora_io.model_fingerprint(other)}"):
        lora_io.load_adapters(other, [(folder, 1.0)])


@pytest.mark.parametrize("damage", ["missing_weights", "corrupt_weights", "corrupt_config", "pickle_only"])
def test_damaged_folder_names_the_file(exported, tmp_path, damage) -> None:
    import shutil

    _, folder, _ = exported
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    weights, config = broken / "base" / "adapter_model.safetensors", broken / "base" / "adapter_config.json"
    if damage == "missing_weights":
        weights.unlink()
    elif damage == "corrupt_weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "corrupt_config":
        config.write_text("{not json")
    else:
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ValueError, match=str(config if damage == "corrupt_config" else weights)):
        lora_io.load_adapters(build_tiny_model(), [(broken, 1.0)])
    assert zoo_main(["lora", "info", str(broken)]) == 2


def test_zero_matching_keys_fail_and_mismatches_are_listed(exported, tmp_path) -> None:
    import shutil

    from safetensors.torch import save_file

    _, folder, _ = exported
    for name, rename in [("zero", lambda k: k.replace("base_model.model.", "other.")), ("some", lambda k: k.replace("to_q.lora_A", "to_q.lora_X"))]:
        broken = tmp_path / name
        shutil.copytree(folder, broken)
        path = broken / "base" / "adapter_model.safetensors"
        save_file({rename(k): v for k, v in load_file(path).items()}, path)
        match = "none of its" if name == "zero" else r"keys match, but 12 are missing.*12 are unexpected"
        with pytest.raises(ValueError, match=match):
            lora_io.load_adapters(build_tiny_model(), [(broken, 1.0)])


# ------------------------------------------------------------------------------------------- mix and merge
def test_mix_cat_equals_runtime_weighted_adapters(exported, tmp_path) -> None:
    _, first, _ = exported
    ckpt2, _ = lora_checkpoint(tmp_path / "run2" / "last.ckpt", seed=2)
    second = lora_io.export(ckpt2, tmp_path / "second", num_samples=0)
    assert zoo_main(["lora", "mix", f"{first}:0.3", f"{second}:0.7", "--out", str(tmp_path / "mixed")]) == 0
    assert lora_io.info(tmp_path / "mixed")["stages"]["base"]["rank"] == 2 * RANK  # cat stacks the ranks
    mixed = build_tiny_model()
    lora_io.load_adapters(mixed, [(tmp_path / "mixed", 1.0)])
    runtime = build_tiny_model()
    lora_io.load_adapters(runtime, [(first, 0.3), (second, 0.7)])
    torch.testing.assert_close(denoise(mixed), denoise(runtime), atol=1e-5, rtol=0)


def test_merge_folds_the_adapter_into_a_full_checkpoint(exported, tmp_path) -> None:
    ckpt, folder, lora_model = exported
    assert zoo_main(["lora", "merge", str(folder), "--base", str(ckpt), "--out", str(tmp_path / "merged.ckpt")]) == 0
    merged = InstructImagen.load_from_checkpoint(tmp_path / "merged.ckpt", map_location="cpu")
    assert merged.lora_config is None and not any(".lora_" in k for k in merged.state_dict())
    torch.testing.assert_close(denoise(merged), denoise(lora_model), atol=1e-5, rtol=0)
    started = build_tiny_model(init_from=str(tmp_path / "merged.ckpt"))  # a new run starts from it
    torch.testing.assert_close(denoise(started), denoise(lora_model), atol=1e-5, rtol=0)


def test_export_refuses_a_run_without_lora(tmp_path, capsys) -> None:
    model = build_tiny_model()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, tmp_path / "full.ckpt")
    assert zoo_main(["lora", "export", "--ckpt", str(tmp_path / "full.ckpt"), "--out", str(tmp_path / "x")]) == 2
    assert "trained without LoRA" in capsys.readouterr().err
