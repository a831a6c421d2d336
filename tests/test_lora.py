"""LoRA: targets and trainable parameters; adapter export, strict loading, info, mixing, merging and interop.

A LoRA "run" here is mostly a tiny model whose adapters got random non-zero weights, saved as a Lightning-style
checkpoint: the IO is tested without training. One test trains the shipped LoRA recipe (EMA on) at the tiny scale
and takes its adapter back to the base it started from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import IMAGE_SIZE, build_sr, build_tiny_model
from safetensors.torch import load_file

from zoo.adapters.folder import info, load_adapters, read_manifest, stage_name
from zoo.adapters.share import export
from zoo.checkpoint_io import load_stage, save_weights_checkpoint
from zoo.cli import main as zoo_main
from zoo.lit.module import InstructImagen
from zoo.lora import LoraSpec, count_parameters, model_fingerprint

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
    export(ckpt, root / "adapter", diffusers=True, num_samples=0)
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


def test_the_context_sets_adapt_the_pooled_context_projection_too() -> None:
    model = build_tiny_model(context_pooled=True, context_norm=True, lora=LoraSpec(rank=RANK, targets="context"))
    layers = {n.split(".lora_")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert "model.context_layers.pooled.proj" in layers  # the pooled path is a context layer like the others
    assert all(".context_layers." in n for n in layers) and len(layers) == 4 * 4 + 1


def test_lora_starts_at_the_base_model() -> None:
    torch.testing.assert_close(
        denoise(build_tiny_model(lora={"rank": RANK})), denoise(build_tiny_model()), atol=1e-6, rtol=0
    )


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
    assert {p.name for p in (folder / "base").iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "pytorch_lora_weights.safetensors",
    }
    manifest = json.loads((folder / "zoo_adapter.json").read_text())
    assert manifest["stages"]["base"]["rank"] == RANK and manifest["stages"]["base"]["layers"] == 48
    assert manifest["stages"]["base"]["fingerprint"] == model_fingerprint(build_tiny_model())
    assert manifest["global_step"] == 7 and manifest["lora"]["rank"] == RANK
    card = (folder / "README.md").read_text()
    assert card.startswith("---") and "library_name: peft" in card and manifest["stages"]["base"]["fingerprint"] in card
    keys = load_file(folder / "base" / "adapter_model.safetensors")
    assert all(k.startswith("base_model.model.") and ".lora_" in k for k in keys)


def test_an_adapter_folder_names_the_stage_it_adapts() -> None:
    """The folder of a stage in an adapter is the pipeline's name for it: `base`, or `sr` for super-resolution."""
    assert stage_name(build_tiny_model()) == "base"
    assert stage_name(build_sr()) == "sr"


def test_info_reads_the_folder_alone(exported, monkeypatch) -> None:
    _, folder, _ = exported
    monkeypatch.setattr(InstructImagen, "__init__", lambda *a, **k: pytest.fail("info must not build a model"))
    summary = info(folder)
    assert summary["stages"]["base"]["rank"] == RANK
    assert summary["stages"]["base"]["parameters"] == 48 * 2 * RANK * 32
    assert zoo_main(["lora", "info", str(folder)]) == 0


def test_loaded_adapter_reproduces_the_lora_model(exported) -> None:
    _, folder, lora_model = exported
    base = build_tiny_model()
    before = denoise(base)
    load_adapters(base, [(folder, 1.0)])
    after = denoise(base)
    assert (after - before).abs().max() > 1e-3  # the adapter does something
    torch.testing.assert_close(after, denoise(lora_model), atol=1e-5, rtol=0)


def test_adapter_loads_onto_its_base_saved_as_a_pipeline_folder(exported, tmp_path) -> None:
    """A shipped model is a pipeline folder: its base stage keeps the fingerprint of the model it was saved from."""
    from zoo.pipeline import InstructImagenPipeline

    _, folder, lora_model = exported
    InstructImagenPipeline(build_tiny_model()).save_pretrained(tmp_path / "shipped")
    base = InstructImagenPipeline.from_pretrained(tmp_path / "shipped").base
    load_adapters(base, [(folder, 1.0)])
    torch.testing.assert_close(denoise(base), denoise(lora_model), atol=1e-5, rtol=0)


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
    with pytest.raises(ValueError, match=rf"made for base {theirs}.*base is {model_fingerprint(other)}"):
        load_adapters(other, [(folder, 1.0)])


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
        load_adapters(build_tiny_model(), [(broken, 1.0)])
    assert zoo_main(["lora", "info", str(broken)]) == 2


def test_zero_matching_keys_fail_and_mismatches_are_listed(exported, tmp_path) -> None:
    import shutil

    from safetensors.torch import save_file

    _, folder, _ = exported
    for name, rename in [
        ("zero", lambda k: k.replace("base_model.model.", "other.")),
        ("some", lambda k: k.replace("to_q.lora_A", "to_q.lora_X")),
    ]:
        broken = tmp_path / name
        shutil.copytree(folder, broken)
        path = broken / "base" / "adapter_model.safetensors"
        save_file({rename(k): v for k, v in load_file(path).items()}, path)
        match = "none of its" if name == "zero" else r"keys match, but 12 are missing.*12 are unexpected"
        with pytest.raises(ValueError, match=match):
            load_adapters(build_tiny_model(), [(broken, 1.0)])


# ------------------------------------------------------------------------------------------- mix and merge
def test_mix_cat_equals_runtime_weighted_adapters(exported, tmp_path) -> None:
    _, first, _ = exported
    ckpt2, _ = lora_checkpoint(tmp_path / "run2" / "last.ckpt", seed=2)
    second = export(ckpt2, tmp_path / "second", num_samples=0)
    assert zoo_main(["lora", "mix", f"{first}:0.3", f"{second}:0.7", "--out", str(tmp_path / "mixed")]) == 0
    assert info(tmp_path / "mixed")["stages"]["base"]["rank"] == 2 * RANK  # cat stacks the ranks
    mixed = build_tiny_model()
    load_adapters(mixed, [(tmp_path / "mixed", 1.0)])
    runtime = build_tiny_model()
    load_adapters(runtime, [(first, 0.3), (second, 0.7)])
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


# ----------------------------------------------------------------------------- the shipped recipe, EMA on
def test_adapter_of_the_shipped_recipe_with_ema_loads_and_merges_on_its_base(tmp_path, monkeypatch) -> None:
    """recipes/stage2_lora.yaml (its EMAWeightAveraging on) at the tiny scale, from a base checkpoint: the exported
    adapter loads onto that base through `generate` and merges with `lora merge --base` — the EMA must not move the
    frozen base weights, which the adapter's base fingerprint is made of."""
    from conftest import REPO_ROOT, TEXT_MAX_LENGTH, perturb_context_layers

    recipe = REPO_ROOT / "recipes" / "stage2_lora.yaml"
    # The base is a stage-2 result, so it has the recipe's context-reading layers (context_norm, context_pooled, ...).
    reading = {k: v for k, v in yaml.safe_load(recipe.read_text())["model"].items() if k.startswith("context_")}
    base = build_tiny_model(**reading)
    perturb_context_layers(base)  # a trained stage has non-zero context layers, which LoRA adapts
    base_ckpt = save_weights_checkpoint(base, tmp_path / "base.ckpt")
    callbacks = yaml.safe_load(recipe.read_text())["trainer"]["callbacks"]  # the recipe's own, EMA included
    # a callback without arguments may be written as its bare class path
    callbacks = [{"class_path": c} if isinstance(c, str) else c for c in callbacks]
    assert any(c["class_path"].endswith("EMAWeightAveraging") for c in callbacks)
    for callback in callbacks:
        if callback["class_path"].endswith("SampleGrid"):  # the final grid at the tiny scale, not 9 × 50 steps
            callback["init_args"].update(num_samples=1, num_inference_steps=2)
        if callback["class_path"].endswith("ModelCheckpoint"):
            # The recipe's cadence (every 100 steps) scaled to this 3-step run, so `last.ckpt` is written while
            # training, as in a real run, not after Lightning has copied the average into the live weights.
            callback["init_args"].update(every_n_train_steps=3)
    tiny = {
        "trainer": {
            "default_root_dir": str(tmp_path / "run"),
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 3,
            "val_check_interval": 3,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": callbacks,
        },
        "model": {
            "unet": "tiny",
            "text_encoder": "builtin:tiny-t5",
            "text_max_length": TEXT_MAX_LENGTH,
            "init_from": str(base_ckpt),
            "sample_steps": 2,
            "learning_rate": 0.01,
            "warmup_steps": 0,
        },
        "data": {"image_size": IMAGE_SIZE, "batch_size": 2, "samples_per_epoch": 8, "val_samples": 2},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    monkeypatch.setattr(sys, "argv", ["zoo"])
    with torch.random.fork_rng(devices=[]):
        assert zoo_main(["fit", "--config", str(recipe), "--config", str(tmp_path / "tiny.yaml")]) == 0
    run_ckpt = tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(run_ckpt, weights_only=True)
    assert "current_model_state" in saved and saved["global_step"] == 3  # the recipe's EMA ran
    lora_keys = [k for k in saved["state_dict"] if ".lora_" in k]
    assert any(not torch.equal(saved["state_dict"][k], saved["current_model_state"][k]) for k in lora_keys)

    adapter = tmp_path / "adapter"
    assert zoo_main(["lora", "export", "--ckpt", str(run_ckpt), "--out", str(adapter), "--num-samples", "0"]) == 0
    assert read_manifest(adapter)["stages"]["base"]["fingerprint"] == model_fingerprint(base)
    out = tmp_path / "generated"
    with torch.random.fork_rng(devices=[]):
        assert (
            zoo_main(
                [
                    "generate",
                    "Draw a red circle on the left",
                    "--ckpt",
                    str(base_ckpt),
                    "--adapter",
                    str(adapter),
                    "--steps",
                    "2",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    assert (out / "sample_0000.png").is_file()
    merged = tmp_path / "merged.ckpt"
    assert zoo_main(["lora", "merge", str(adapter), "--base", str(base_ckpt), "--out", str(merged)]) == 0
    # base + the EMA adapter is the run's EMA model, and the run's own checkpoint serves as the base as well
    run_model, _ = load_stage(InstructImagen, run_ckpt)
    torch.testing.assert_close(
        denoise(InstructImagen.load_from_checkpoint(merged, map_location="cpu")), denoise(run_model), atol=1e-5, rtol=0
    )
    again = tmp_path / "again.ckpt"
    assert zoo_main(["lora", "merge", str(adapter), "--base", str(run_ckpt), "--out", str(again)]) == 0

    # a LoRA checkpoint written before the fix (its averaged base drifted) still exports for the base it started from
    for key in saved["state_dict"]:
        if ".lora_" not in key and key.startswith("model."):
            saved["state_dict"][key] = saved["state_dict"][key] * (1 + 1e-5)
    torch.save(saved, tmp_path / "drifted.ckpt")
    assert (
        zoo_main(
            [
                "lora",
                "export",
                "--ckpt",
                str(tmp_path / "drifted.ckpt"),
                "--out",
                str(tmp_path / "old"),
                "--num-samples",
                "0",
            ]
        )
        == 0
    )
    assert read_manifest(tmp_path / "old")["stages"]["base"]["fingerprint"] == model_fingerprint(base)
