"""The LoRA recipe turns LoRA on (every recipe's parsing is covered by test_cli)."""

from __future__ import annotations

import pytest
import yaml

from cli_helpers import REPO_ROOT
from zoo.cli import main


def test_lora_recipe_turns_lora_on(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO_ROOT / "recipes" / "stage2_lora.yaml"), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    lora = printed["model"]["init_args"]["lora"]
    assert lora["rank"] == 16 and lora["targets"] == "attention"
    assert any("EMAWeightAveraging" in cb["class_path"] for cb in printed["trainer"]["callbacks"])
