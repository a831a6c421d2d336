"""Task plugins found through entry points, and `python -m zoo list tasks`.

A package adds tasks without touching zoo by registering them under the `zoo.tasks` entry-point group:

    [project.entry-points."zoo.tasks"]
    checkerboard = "zoo_checkerboard.task:CheckerboardInversion"

Discovery reads installed package metadata only; a plugin is imported when it is loaded, and one that fails to
import is reported with its error instead of taking the tool down. In a recipe, a task is always named by its full
`class_path` (the entry point's value with `:` → `.`); `list tasks` prints that path for every plugin.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

GROUP = "zoo.tasks"


@dataclass(frozen=True)
class TaskPlugin:
    """One registered task: entry-point `name`, `value` ("module:Class") and the distribution that ships it."""

    name: str
    value: str
    distribution: str
    version: str = ""

    @property
    def package(self) -> str:
        return f"{self.distribution} {self.version}".strip()

    @property
    def class_path(self) -> str:
        """What a recipe writes under `data.tasks[*].class_path`."""
        return self.value.replace(":", ".")

    def load(self) -> type:
        """Imports the plugin and checks it is a `zoo.task.Task` subclass.

        Raises:
            TypeError: when the entry point names something that is not a Task class.
            Exception: whatever importing the plugin raises.
        """
        from zoo.task import Task

        loaded = EntryPoint(self.name, self.value, GROUP).load()
        if not (isinstance(loaded, type) and issubclass(loaded, Task)):
            raise TypeError(f"{self.value} is not a zoo.task.Task subclass (got {loaded!r})")
        return loaded


@dataclass(frozen=True)
class PluginStatus:
    plugin: TaskPlugin
    error: str | None  # None: imports and is a Task

    @property
    def ok(self) -> bool:
        return self.error is None


def discover(group: str = GROUP) -> list[TaskPlugin]:
    """Registered plugins, sorted by name; nothing is imported."""
    plugins = []
    for point in entry_points(group=group):
        name, version = (point.dist.name, point.dist.version) if point.dist is not None else ("-", "")
        plugins.append(TaskPlugin(point.name, point.value, name, version))
    return sorted(set(plugins), key=lambda plugin: (plugin.name, plugin.package))


def check(plugin: TaskPlugin) -> PluginStatus:
    """Loads `plugin`, turning any failure into a one-line error."""
    try:
        plugin.load()
    except Exception as error:  # a broken plugin is reported, never fatal
        return PluginStatus(plugin, f"{type(error).__name__}: {error}")
    return PluginStatus(plugin, None)


def format_statuses(statuses: list[PluginStatus]) -> str:
    """A plain-text table: name, package, class path, status."""
    rows = [("name", "package", "class_path", "status")]
    for status in statuses:
        plugin = status.plugin
        rows.append((plugin.name, plugin.package, plugin.class_path, "ok" if status.ok else f"broken: {status.error}"))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[3]]) for row in rows)


def main(argv: list[str]) -> int:
    """`python -m zoo list tasks`: every registered task with its package, class path and import status."""
    parser = argparse.ArgumentParser(prog="python -m zoo list", description="List installed zoo plugins.")
    parser.add_argument("kind", choices=["tasks"], help="what to list")
    args = parser.parse_args(argv)
    if args.kind == "tasks":
        statuses = [check(plugin) for plugin in discover()]
        if not statuses:
            print(f"no task plugins registered under the {GROUP!r} entry-point group")
            return 0
        print(format_statuses(statuses))
        broken = sum(not status.ok for status in statuses)
        if broken:
            print(f"\n{broken} of {len(statuses)} task plugins failed to import (listed above)", file=sys.stderr)
    return 0
