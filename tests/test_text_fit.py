"""Every recipe's text limit fits its tasks: no built-in instruction or context text is cut (issue #11, item 1).

For each recipe in `recipes/` with tasks, the tasks are built from its `data.tasks` entries (class_path/init_args,
at 16 px to be quick) and the first `PER_TASK` instructions are counted with the recipe's own encoder (its tokenizer,
after marker replacement, `</s>` included). Overlays without tasks (`recipes/scale/`, `recipes/examples/`) name
encoders that are not available offline or take the tasks of the recipe they layer over.
"""

from __future__ import annotations

import importlib
from functools import cache

import pytest
import yaml
from conftest import REPO_ROOT

from tasks.vocabulary import instruction_texts
from zoo.models.text import TextEncoder

PER_TASK = 256
IGNORED_ARGS = ("image_size", "num_examples")  # set here: 16 px, PER_TASK examples
RECIPES = sorted(p for p in (REPO_ROOT / "recipes").glob("*.yaml") if "tasks" in yaml.safe_load(p.read_text())["data"])


@cache
def texts_of(class_path: str, init_args: tuple) -> frozenset[str]:
    """The distinct texts of the first `PER_TASK` instructions of a task entry (cached: recipes share tasks)."""
    module, _, name = class_path.rpartition(".")
    task = getattr(importlib.import_module(module), name)(**dict(init_args), image_size=16, num_examples=PER_TASK)
    return frozenset(text for i in range(min(PER_TASK, len(task))) for text in instruction_texts(task[i]))


@cache
def too_long(encoder: str, max_length: int, class_path: str, init_args: tuple) -> tuple[tuple[int, str], ...]:
    """(token count, text) of each text of a task entry longer than the encoder's limit (cached: recipes repeat)."""
    texts = sorted(texts_of(class_path, init_args))
    counts = TextEncoder(encoder, max_length=max_length).token_counts(texts)
    return tuple((count, text) for count, text in zip(counts, texts) if count > max_length)


@pytest.mark.parametrize("recipe", RECIPES, ids=[path.name for path in RECIPES])
def test_every_text_of_the_recipe_fits_its_encoder(recipe) -> None:
    config = yaml.safe_load(recipe.read_text())
    model = config["model"].get("init_args", config["model"])  # a class_path module (recipes/sr.yaml) keeps them there
    encoder, max_length = model["text_encoder"], model["text_max_length"]
    found = []
    for entry in config["data"]["tasks"]:
        init_args = tuple(sorted((k, v) for k, v in entry["init_args"].items() if k not in IGNORED_ARGS))
        found += too_long(encoder, max_length, entry["class_path"], init_args)
    assert not found, f"{recipe.name}: {encoder} max_length={max_length}, but {max(found)} ({len(found)} texts)"
