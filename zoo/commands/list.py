"""`python -m zoo list models|tasks`: the UNet presets with their sizes, or the task plugins with their status."""

from __future__ import annotations

import sys
from collections.abc import Callable


def list_models() -> int:
    """Prints each UNet preset: name, resolution, backbone parameters (counted on the meta device), summary."""
    from zoo.models.presets import describe_presets

    print(f"{'preset':<14} {'px':>4} {'params':>8}  description")
    for info in describe_presets():
        print(f"{info.name:<14} {info.resolution:>4} {info.parameters / 1e6:>7.1f}M  {info.summary}")
    return 0


def list_tasks() -> int:
    from zoo.plugins import main as plugins_main

    return plugins_main(["tasks"])


SUBJECTS: dict[str, Callable[[], int]] = {"models": list_models, "tasks": list_tasks}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in SUBJECTS:
        print(f"error: usage: python -m zoo list <subject>; subjects: {', '.join(SUBJECTS)}", file=sys.stderr)
        return 2
    return SUBJECTS[argv[0]]()
