"""Recipes and scale overlays: every layering the README tells users about parses, the overlays carry the paper's
values (App. A.2.2), the Adafactor β1 option, and the DeepFloyd-IF conversion the IF overlay documents."""

from __future__ import annotations

import re
import shlex

import pytest
import torch
import yaml
from cli_helpers import REPO_ROOT

from zoo.cli import main

RECIPES = REPO_ROOT / "recipes"


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs pass their arguments explicitly; hide pytest's own argv from LightningCLI."""
    monkeypatch.setattr("sys.argv", ["zoo"])


def print_config(configs: list[str], capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    argv = ["fit"]
    for config in configs:
        argv += ["--config", str(REPO_ROOT / config)]
    with pytest.raises(SystemExit) as info:
        main([*argv, *extra, "--print_config"])
    assert info.value.code in (0, None), capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


def model_of(config: dict) -> dict:
    """The model's arguments (the CLI prints the model as class_path + init_args)."""
    return config["model"].get("init_args", config["model"])


def readme_layerings() -> list[tuple[str, ...]]:
    """The `--config recipes/...` lists of every `python -m zoo fit` command in README.md's code blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.S)
    text = re.sub(r"\\\n\s*", " ", "\n".join(blocks))  # join continuation lines
    found = set()
    for line in text.splitlines():
        if "python -m zoo fit" not in line:
            continue
        words = shlex.split(line.split("python -m zoo fit", 1)[1].split("#", 1)[0])
        configs = tuple(words[i + 1] for i, word in enumerate(words[:-1]) if word == "--config")
        if configs and all(c.startswith("recipes/") for c in configs):
            found.add(configs)
    return sorted(found)


LAYERINGS = readme_layerings()


def test_readme_names_the_overlays() -> None:
    named = {config for layering in LAYERINGS for config in layering}
    assert {
        "recipes/scale/paper.yaml",
        "recipes/scale/deepfloyd_if.yaml",
        "recipes/stage1.yaml",
        "recipes/editing.yaml",
    } <= named


@pytest.mark.parametrize("configs", LAYERINGS, ids=lambda c: "+".join(p.rsplit("/", 1)[1] for p in c))
def test_every_readme_layering_parses(configs: tuple[str, ...], capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    config = print_config(list(configs), capsys)
    assert config["data"]["tasks"] and all("class_path" in task for task in config["data"]["tasks"])


@pytest.mark.parametrize("recipe", ["stage1.yaml", "stage2.yaml", "stage2_lora.yaml", "editing.yaml"])
def test_every_recipe_under_every_overlay(recipe: str, capsys) -> None:
    for overlay in ("scale/paper.yaml", "scale/deepfloyd_if.yaml"):
        config = print_config([f"recipes/{recipe}", f"recipes/{overlay}"], capsys)
        assert config["data"]["tasks"]
    config = print_config([f"recipes/{recipe}", "recipes/scale/paper.yaml", "recipes/scale/deepfloyd_if.yaml"], capsys)
    assert model_of(config)["init_from"].endswith("eps3") and model_of(config)["optimizer"] == "adafactor"


def test_recipes_open_with_launch_and_override_comments() -> None:
    for path in sorted(RECIPES.glob("*.yaml")) + sorted((RECIPES / "scale").glob("*.yaml")):
        head = path.read_text().split("\n\n", 1)[0]
        assert head.startswith("#") and "python -m zoo" in head and "Override:" in head, path.name


def test_paper_overlay_values(capsys) -> None:
    c = print_config(["recipes/stage2.yaml", "recipes/scale/paper.yaml"], capsys)
    model, data, trainer = model_of(c), c["data"], c["trainer"]
    assert model["unet"] == "paper_base128" and data["image_size"] == 128
    assert model["text_refiner"] == 0 and model["init_from"] is None  # the paper's model, not the 32 px recipes' base
    assert {t["init_args"]["image_size"] for t in data["tasks"]} == {128}  # the world renders at the overlay's size
    assert data["batch_size"] * trainer["devices"] * trainer["num_nodes"] * trainer["accumulate_grad_batches"] == 512
    assert (
        model["optimizer"],
        model["adafactor_beta1"],
        model["adafactor_beta2_cap"],
        model["learning_rate"],
        model["warmup_steps"],
    ) == ("adafactor", 0.9, 0.999, 1e-4, 10000)
    assert trainer["max_steps"] == 400_000
    ema = [cb for cb in trainer["callbacks"] if cb["class_path"].endswith("EMAWeightAveraging")]
    assert ema and ema[0]["init_args"]["decay"] == 0.9999
    # the recipe's tasks, ratios and dropout are untouched by the overlay
    stage2 = print_config(["recipes/stage2.yaml"], capsys)
    assert c["data"]["ratios"] == stage2["data"]["ratios"] and len(c["data"]["tasks"]) == len(stage2["data"]["tasks"])


def test_lora_recipe_turns_lora_on(capsys) -> None:
    printed = print_config(["recipes/stage2_lora.yaml"], capsys)
    lora = model_of(printed)["lora"]
    assert lora["rank"] == 16 and lora["targets"] == "attention"
    assert any("EMAWeightAveraging" in cb["class_path"] for cb in printed["trainer"]["callbacks"])


@pytest.mark.parametrize("recipe", ["recipes/stage2_lora.yaml", "recipes/editing.yaml"])
def test_fine_tunes_of_stage2_launch_with_its_text_refiner(recipe: str, capsys) -> None:
    # their launch command starts from make demo's stage 2, whose refiner layers a model without them refuses
    stage2 = model_of(print_config(["recipes/stage2.yaml"], capsys))["text_refiner"]
    launch = (REPO_ROOT / recipe).read_text().split("# Launch:", 1)[1].split("# Override:", 1)[0]
    assert stage2 > 0 and "checkpoints/stage2/" in launch and f"--model.text_refiner {stage2}" in launch


def test_adafactor_beta1_keeps_momentum(make_tiny_model) -> None:
    from transformers.optimization import Adafactor

    model = make_tiny_model(optimizer="adafactor", adafactor_beta1=0.9, learning_rate=1e-3)
    optimizer = model.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, Adafactor) and optimizer.defaults["beta1"] == 0.9
    param = next(p for p in model.parameters() if p.requires_grad and p.dim() == 4)
    before = param.detach().clone()
    param.grad = torch.ones_like(param)
    optimizer.step()
    assert "exp_avg" in optimizer.state[param] and not torch.equal(before, param.detach())
    plain = make_tiny_model(optimizer="adafactor").configure_optimizers()["optimizer"]
    assert isinstance(plain, torch.optim.Adafactor)  # without β1: torch's, as before


def test_adafactor_beta2_is_capped_at_the_papers_0_999(make_tiny_model) -> None:
    """β2_t = min(1 − t^−0.8, 0.999): the usual schedule early, 0.999 once it gets there (step ~5.6k), never above."""
    from zoo.lit.adafactor import CappedAdafactor, capped_decay_rate

    for step, beta2 in [(2, 1 - 2**-0.8), (100, 1 - 100**-0.8), (5000, 1 - 5000**-0.8), (6000, 0.999), (10**6, 0.999)]:
        assert 1 - step ** capped_decay_rate(step, -0.8, 0.999) == pytest.approx(beta2, abs=1e-12)
    model = make_tiny_model(optimizer="adafactor", adafactor_beta1=0.9, adafactor_beta2_cap=0.999, learning_rate=1e-3)
    optimizer = model.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, CappedAdafactor) and optimizer.defaults["beta1"] == 0.9
    param = next(p for p in model.parameters() if p.requires_grad and p.dim() == 1)
    param.grad = torch.ones_like(param)
    optimizer.step()  # step 1 initialises the second moment with the squared gradient
    optimizer.state[param]["step"] = 99_999  # as after a long run: the next step is 100k, uncapped β2 would be 0.9999
    before = optimizer.state[param]["exp_avg_sq"].clone()
    param.grad = torch.zeros_like(param)
    optimizer.step()
    ratio = optimizer.state[param]["exp_avg_sq"] / before  # v = β2 v + (1 − β2)(g² + 1e-30), and g = 0
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.999), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="adafactor_beta2_cap"):
        make_tiny_model(optimizer="adafactor", adafactor_beta2_cap=1.0)


def test_deepfloyd_conversion_of_the_overlay_loads(tmp_path, make_tiny_model) -> None:
    """The overlay's recipe on a tiny 6-channel (ε + variance) UNet: keep the ε half, then load as a backbone."""
    from diffusers import UNet2DConditionModel

    from zoo.models.presets import resolve_unet_config

    published = tmp_path / "IF-I-tiny" / "unet"
    UNet2DConditionModel(**{**resolve_unet_config("tiny"), "out_channels": 6}).save_pretrained(published)
    # --- the conversion as recipes/scale/deepfloyd_if.yaml writes it
    unet = UNet2DConditionModel.from_pretrained(str(published.parent), subfolder="unet", use_safetensors=True)
    old = unet.conv_out
    new = torch.nn.Conv2d(old.in_channels, 3, old.kernel_size, padding=old.padding)
    new.load_state_dict({"weight": old.weight[:3].clone(), "bias": old.bias[:3].clone()})
    unet.conv_out = new
    unet.register_to_config(out_channels=3)
    unet.save_pretrained(tmp_path / "IF-I-tiny-eps3")
    # ---
    model = make_tiny_model(unet=str(tmp_path / "IF-I-tiny-eps3"), init_from=str(tmp_path / "IF-I-tiny-eps3"))
    assert torch.equal(model.model.unet.conv_out.weight, old.weight[:3])
    from zoo.instruction import Instruction, collate_instructions

    batch = collate_instructions([Instruction(text="a red circle", target=torch.zeros(3, 16, 16))], image_size=(16, 16))
    loss = model.training_step(batch, 0)  # the published 6-channel folder fails here; the converted one trains
    assert torch.isfinite(loss)
