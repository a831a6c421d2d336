"""Every recipe parses with `python -m zoo fit --config ... --print_config`; an overlay (a `# layer-on: BASE`
header line) is parsed layered on its base."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cli_helpers import REPO_ROOT
from zoo.cli import main

RECIPES = sorted((REPO_ROOT / "recipes").glob("**/*.yaml"))


def config_args(recipe: Path) -> list[str]:
    base = re.search(r"^# layer-on: (\S+)$", recipe.read_text(), flags=re.MULTILINE)
    files = [REPO_ROOT / base.group(1), recipe] if base else [recipe]
    return [arg for path in files for arg in ("--config", str(path))]


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(p.relative_to(REPO_ROOT)) for p in RECIPES])
def test_recipe_parses(recipe: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *config_args(recipe), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["unet"] and printed["data"]["tasks"]


def test_lora_overlay_turns_lora_on(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", *config_args(REPO_ROOT / "recipes" / "stage2_lora.yaml"), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["lora"]["rank"] == 16 and printed["model"]["lora"]["targets"] == "attention"
    assert printed["data"]["tasks"]  # stage 2's tasks, layered
