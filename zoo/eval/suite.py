"""The evaluation-suite protocol: named sets of instructions (in-domain per task, zero-shot compositions) plus the
function that scores a generated image against an instruction's ground truth.

A suite is provided by the task side and named by an import string, so `zoo` never imports `tasks`:
`--suite builtin` means `tasks.suites:builtin`; `--suite my_pkg.evals:suite` names any other. The attribute is
either a `Suite` or a factory called as `factory(n=..., image_size=..., seed=...)` that returns one.

Scoring contract (`Suite.score(meta, image)`): `meta` is `Instruction.meta` (the ground truth), `image` the generated
image, a float tensor (3, H, W) in [-1, 1]; it returns a `Rating`: one score in {0, 0.5, 1} (the ImagenHub scale) per
input of the instruction (the payload text, "text", and each kind of reference: the *context conditions*), plus the
result of every attribute check behind them. A third-party scorer may return a plain {condition: score} mapping
instead (then there are no attribute pass rates). SC is the least satisfied condition (paper §4.2):
`semantic_consistency` takes the minimum.

A suite may also name its own chance baselines (`Suite.baselines`): functions from a set's instructions to images that
know nothing of the instruction beyond what chance would (e.g. the true background alone); the report scores them
beside the models.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from zoo.instruction import Instruction

# Editing is its own split: only the editing fine-tune trains it, so it is never averaged into stage 2's in-domain.
SPLITS = ("in-domain", "zero-shot", "editing")
FAMILIES = ("text_to_image", "subject", "editing", "control")
CONTROLS = ("edge", "depth", "mask")
RATING_LEVELS = (0.0, 0.5, 1.0)
BUILTIN = "tasks.suites:builtin"
TEXT_CONDITION = "text"


@dataclass(frozen=True)
class Rating:
    """One generated image rated against its instruction's ground truth.

    Args:
        conditions: one score (0, 0.5 or 1) per input of the instruction: "text" is the payload text; every other
            name ("style", "subject", "control", "content", "source") is a kind of reference, a *context condition*.
        attributes: attribute kind ("colour", "shape", "position", "style", "subject identity", "edit", "preserve",
            ...) → the result of each of its checks in this example (1.0 or 0.0; "preserve" may be 0.5).
    """

    conditions: dict[str, float]
    attributes: dict[str, list[float]]


Scorer = Callable[[dict, torch.Tensor], Rating | Mapping[str, float]]
Annotator = Callable[[torch.Tensor], torch.Tensor]
Baseline = Callable[[list[Instruction]], torch.Tensor]


@dataclass
class EvalSet:
    """One row of the report's table.

    Args:
        name: the row label, e.g. "styled_generation" or "style+subject".
        split: "in-domain" or "zero-shot" (the two halves of Table 4), or "editing" (its own table).
        instructions: the instructions, with `target` where a ground-truth image exists.
        family: which standard metrics apply: "text_to_image" (CLIP score, FD/KD), "subject" (DreamBench: image
            similarity to the references, CLIP-T), "editing" (MagicBrush: L1/L2/similarities inside and outside the
            mask), "control" (fidelity to the control) or None (SC/PQ only).
        control: for family "control", which kind: "edge", "depth" or "mask".
    """

    name: str
    split: Literal["in-domain", "zero-shot", "editing"]
    instructions: Sequence[Instruction]
    family: str | None = None
    control: str | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"eval set {self.name!r}: split must be one of {SPLITS}, got {self.split!r}")
        if self.family is not None and self.family not in FAMILIES:
            raise ValueError(f"eval set {self.name!r}: family must be one of {FAMILIES} or None, got {self.family!r}")
        if (self.family == "control") != (self.control is not None) or (self.control and self.control not in CONTROLS):
            raise ValueError(
                f"eval set {self.name!r}: control must be one of {CONTROLS} exactly when family is 'control'; "
                f"got family {self.family!r}, control {self.control!r}"
            )
        if len(self.instructions) == 0:
            raise ValueError(f"eval set {self.name!r} holds no instructions")


@dataclass
class Suite:
    """Named eval sets, the scorer, optional annotators ("edge", "depth", "mask": image (3, H, W) in [-1, 1] →
    map (H, W)) that made the tasks' control conditions, so control fidelity uses the same detector, and optional
    chance baselines (name → function from a set's instructions to images (N, 3, H, W) in [-1, 1])."""

    name: str
    sets: list[EvalSet]
    score: Scorer
    annotators: dict[str, Annotator] = field(default_factory=dict)
    baselines: dict[str, Baseline] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [s.name for s in self.sets]
        if len(set(names)) != len(names):
            raise ValueError(f"suite {self.name!r}: eval set names repeat: {names}")
        if not self.sets:
            raise ValueError(f"suite {self.name!r} has no eval sets")


def as_rating(result: Rating | Mapping[str, float], where: str = "scorer") -> Rating:
    """A scorer's answer as a validated `Rating` (a plain mapping becomes its conditions, with no attributes)."""
    if isinstance(result, Rating):
        conditions, attributes = result.conditions, result.attributes
    elif isinstance(result, Mapping):
        conditions, attributes = result, {}
    else:
        raise TypeError(
            f"{where}: returned a {type(result).__name__}; expected a Rating or a {{condition: score}} dict"
        )
    conditions = {str(k): float(v) for k, v in conditions.items()}
    semantic_consistency(conditions, where)
    checked = {}
    for kind, results in attributes.items():
        values = [float(r) for r in results]
        if any(not 0 <= v <= 1 for v in values):
            raise ValueError(f"{where}: attribute {kind!r} has check results {values}; each must lie in [0, 1]")
        checked[str(kind)] = values
    return Rating(conditions, checked)


def context_score(conditions: Mapping[str, float]) -> float | None:
    """The mean of the context conditions (every condition but the payload text's); None when there are none."""
    values = [float(v) for name, v in conditions.items() if name != TEXT_CONDITION]
    return sum(values) / len(values) if values else None


def semantic_consistency(conditions: Rating | Mapping[str, float], where: str = "scorer") -> float:
    """SC of one example: the score of its least satisfied condition; validates the ImagenHub levels."""
    if isinstance(conditions, Rating):
        conditions = conditions.conditions
    if not conditions:
        raise ValueError(f"{where}: returned no conditions; a scorer must rate at least one")
    for name, value in conditions.items():
        if float(value) not in RATING_LEVELS:
            raise ValueError(f"{where}: condition {name!r} scored {value!r}; scores must be 0, 0.5 or 1")
    return min(float(v) for v in conditions.values())


def resolve_suite(spec: str, n: int, image_size: int, seed: int = 0) -> Suite:
    """The suite named by `spec` ("builtin" or "module:attr"), each set cut to its first `n` instructions."""
    path = BUILTIN if spec == "builtin" else spec
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--suite {spec!r}: expected 'builtin' or 'module:attribute', e.g. 'my_evals.suites:main'")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        hint = " (the built-in suite ships with the task plugins in tasks/)" if spec == "builtin" else ""
        raise ValueError(f"--suite {spec!r}: cannot load {path}: {error}{hint}") from error
    suite = target if isinstance(target, Suite) else target(n=n, image_size=image_size, seed=seed)
    if not isinstance(suite, Suite):
        raise TypeError(f"--suite {spec!r}: {path} gave a {type(suite).__name__}, expected a zoo.eval.suite.Suite")
    for eval_set in suite.sets:
        eval_set.instructions = [eval_set.instructions[i] for i in range(min(n, len(eval_set.instructions)))]
    return suite
