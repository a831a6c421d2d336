"""The house rules of `zoo/` (docs/architecture.md), read from the source with `ast`, so they stay true.

Every `import` counts, at module level or inside a function (a lazy import is still a dependency). The rules:
- no circle: no two modules of `zoo` import each other, directly or through others;
- one way: a module imports only modules on its own floor or below (`FLOORS`);
- nothing below the stages floor imports Lightning;
- `zoo` never imports the task plugins (`tasks`): it finds them by name (entry points, importlib).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

from zoo.cli import VERBS

# The floors, bottom to top. A module's floor is that of the longest dotted prefix listed here; anything not listed
# is on the ground floor with the schema, so a new module that imports upward must say where it stands.
SCHEMA, BLOCKS, STAGES, COMMANDS = 0, 1, 2, 3
FLOORS = {
    "zoo": SCHEMA,  # instruction, task, sources, plugins, grid: the data's vocabulary
    "zoo.models": BLOCKS,  # networks, text encoders, presets, init_from weights
    "zoo.diffusion": BLOCKS,  # schedule, objective, samplers
    "zoo.lora": BLOCKS,  # which layers adapt, and the base fingerprint
    "zoo.checkpoint_io": BLOCKS,  # reading and writing checkpoint files
    "zoo.eval": BLOCKS,  # suites, metrics, features, reports
    "zoo.mining": BLOCKS,  # retrieval neighbours for stage 1
    "zoo.lit": STAGES,  # the Lightning stages, data module, callbacks, recipe parser
    "zoo.pipeline": STAGES,  # the cascade of stages, saved as one folder
    "zoo.adapters": STAGES,  # LoRA adapter folders: the format, loading, export, mix, merge
    "zoo.eval.evaluate": STAGES,  # generates with stages, then scores
    "zoo.eval.rating": STAGES,  # generates with stages for human raters
    "zoo.commands": COMMANDS,  # one module per verb
    "zoo.cli": COMMANDS,  # the verb table
    "zoo.__main__": COMMANDS,
    "zoo.serve": COMMANDS,  # the web demo
}
ZOO = REPO_ROOT / "zoo"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(ZOO.rglob("*.py"))}


def floor(module: str) -> int:
    parts = module.split(".")
    return next(FLOORS[".".join(parts[:n])] for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in FLOORS)


def imported(module: str) -> set[str]:
    """Every module `module` imports (absolute names; `from zoo import x` is `zoo.x` when x is a module)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return names


IMPORTS = {module: imported(module) for module in MODULES}


def zoo_imports(module: str) -> set[str]:
    """The modules of `zoo` that `module` imports (a submodule import also names its package, as Python runs it)."""
    return {name for name in IMPORTS[module] if name in MODULES and name != module}


def test_the_floor_map_names_real_modules() -> None:
    missing = [prefix for prefix in FLOORS if not any(m == prefix or m.startswith(prefix + ".") for m in MODULES)]
    assert not missing, f"FLOORS names modules that do not exist: {missing}"


def test_no_import_circle() -> None:
    """Tarjan's strongly connected components over the import graph: any component of two or more is a circle."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in zoo_imports(node):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                circles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


def test_imports_point_down() -> None:
    upward = [
        f"{module} (floor {floor(module)}) imports {other} (floor {floor(other)})"
        for module in MODULES
        for other in sorted(zoo_imports(module))
        if floor(other) > floor(module)
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_nothing_below_the_stages_imports_lightning() -> None:
    offenders = [
        f"{module} imports {name}"
        for module in MODULES
        if floor(module) < STAGES
        for name in sorted(IMPORTS[module])
        if name.split(".")[0] in ("lightning", "pytorch_lightning")
    ]
    assert not offenders, "Lightning below zoo/lit:\n" + "\n".join(offenders)


def test_zoo_never_imports_the_task_plugins() -> None:
    offenders = [
        f"{module} imports {name}" for module in MODULES for name in IMPORTS[module] if name.split(".")[0] == "tasks"
    ]
    assert not offenders, "zoo imports tasks (find them by name instead):\n" + "\n".join(offenders)


def test_every_verb_is_a_function_of_a_command_module() -> None:
    """Read, not imported: each verb's "module:function" is a top-level function of a module on the commands floor."""
    for name, verb in VERBS.items():
        module, _, function = verb.function.partition(":")
        assert module in MODULES and floor(module) == COMMANDS, f"{name}: {module} is not a command module"
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        assert any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body), (
            f"{name}: {module} defines no function {function}"
        )
