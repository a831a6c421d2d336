"""Every example recipe under recipes/examples parses through the CLI (layered over stage2.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "recipes" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_recipe_prints_its_config(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage2 = path.parents[1] / "stage2.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(stage2), "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: tasks." in printed
