"""Evaluation content is unseen by construction: the world's content split keeps every evaluation target and caption
out of every training task of the recipes, each eval set draws its own targets, and the chance baselines stay at
chance while the true targets score 1."""

from __future__ import annotations

import hashlib
import importlib
import random
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from tasks.scoring import overall, scene_from_dict, score
from tasks.suites import builtin, pick_unused
from tasks.text_to_image import TextToImage
from tasks.world import EVAL_SHARE, SUBJECTS, World, content_split, random_scene, subject_placements
from zoo.eval.baselines import baseline_images
from zoo.instruction import Instruction

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
IMAGE_SIZE = 32
TRAIN_SLICE = 300  # examples enumerated per training task (the scene check below covers every index)
SCENE_KEYS = ("scene", "source_scene", "reference_scene")
SCENE_LISTS = ("reference_scenes", "neighbour_scenes")


def recipe_tasks(recipe: str) -> list:
    """The recipe's `data.tasks`, built as LightningCLI would, at IMAGE_SIZE and TRAIN_SLICE examples."""
    tasks = []
    for spec in yaml.safe_load((RECIPES / recipe).read_text())["data"]["tasks"]:
        module, _, name = spec["class_path"].rpartition(".")
        args = {**spec.get("init_args", {}), "image_size": IMAGE_SIZE, "num_examples": TRAIN_SLICE}
        tasks.append(getattr(importlib.import_module(module), name)(**args))
    return tasks


def pixels(image: torch.Tensor) -> str:
    return hashlib.sha256(image.numpy().tobytes()).hexdigest()


def scenes_of(instruction: Instruction) -> list[dict]:
    meta = instruction.meta
    return [meta[k] for k in SCENE_KEYS if k in meta] + [s for k in SCENE_LISTS for s in meta.get(k, [])]


def leaks(training: list[Instruction], evaluation: list[Instruction]) -> list[str]:
    """Every way an evaluation example was seen in training: its target among training targets or context images,
    or its caption among training captions."""
    seen_pixels = {pixels(i.target) for i in training} | {pixels(c.image) for i in training for c in i.context}
    seen_captions = {i.meta.get("caption") for i in training}
    found = []
    for instruction in evaluation:
        if pixels(instruction.target) in seen_pixels:
            found.append(f"target of {instruction.task}: {instruction.meta.get('caption')}")
        if instruction.meta.get("caption") in seen_captions:
            found.append(f"caption of {instruction.task}: {instruction.meta['caption']}")
    return found


@pytest.fixture(scope="module")
def training() -> list[Instruction]:
    return [
        task[i] for recipe in ("stage1.yaml", "stage2.yaml") for task in recipe_tasks(recipe) for i in range(len(task))
    ]


@pytest.fixture(scope="module")
def suite():
    return builtin(n=16, image_size=IMAGE_SIZE)


def test_the_split_is_a_stable_share_of_what_a_scene_shows() -> None:
    rng = random.Random(0)
    drawn = [random_scene(rng) for _ in range(2000)]  # unfiltered: the share is the hash's own
    assert 0.16 < sum(content_split(s) == "eval" for s in drawn) / len(drawn) < 0.24
    assert all(content_split(World(seed).scene(i)) == "train" for seed in range(2) for i in range(100))
    assert all(content_split(World(seed, "eval").scene(i)) == "eval" for seed in range(2) for i in range(100))
    assert World(5, "eval").scene(3) == World(5, "eval").scene(3)  # still a pure function of (seed, split, index)
    for name in SUBJECTS:  # every subject keeps placements on both sides, about 1 in EVAL_SHARE held out
        held_out = len(subject_placements(name, "eval"))
        assert 60 // EVAL_SHARE // 3 <= held_out <= 3 * 60 // EVAL_SHARE, name
        assert held_out + len(subject_placements(name, "train")) == 60, name


def test_no_evaluation_target_or_caption_occurs_in_training(training, suite) -> None:
    evaluation = [i for s in suite.sets for i in s.instructions]
    assert leaks(training, evaluation) == []

    # The picture level covers every index, not just the slice: training targets are train pictures, eval ones eval.
    def splits(instructions: list[Instruction]) -> set[str]:
        return {content_split(scene_from_dict(i.meta["scene"]), i.meta["style"]) for i in instructions}

    assert splits(training) == {"train"} and splits(evaluation) == {"eval"}
    flat_references = [s for i in training if i.meta["style"] == "flat" for s in scenes_of(i)]
    assert {content_split(scene_from_dict(s)) for s in flat_references} == {"train"}


def test_the_check_catches_a_training_task_that_emits_an_evaluation_scene(training, suite, monkeypatch) -> None:
    evaluation = [i for s in suite.sets for i in s.instructions]
    victim = next(i for i in evaluation if i.task == "text_to_image")
    leaked_scene = scene_from_dict(victim.meta["scene"])
    monkeypatch.setattr(World, "scene", lambda self, index, styles=(): leaked_scene)  # forgot its split
    injected = TextToImage(num_examples=1, seed=0, image_size=IMAGE_SIZE)[0]
    assert injected.meta["scene"] == asdict(leaked_scene)
    found = leaks([*training, injected], evaluation)
    assert any("target of text_to_image" in f for f in found) and any("caption" in f for f in found)


def test_every_eval_set_draws_its_own_targets(suite) -> None:
    keys = [pixels(i.target) for s in suite.sets for i in s.instructions]
    assert len(keys) == len(set(keys)) == 16 * len(suite.sets)
    # pick_unused skips what an earlier set took
    task = TextToImage(num_examples=50, seed=10_000, image_size=IMAGE_SIZE, split="eval")
    first = pick_unused(task, 5, used := set())
    again = pick_unused(task, 5, used)
    assert not {pixels(i.target) for i in first} & {pixels(i.target) for i in again}


@pytest.mark.slow  # ~70 s: scores every set's targets and all chance baselines (`pytest -m slow`)
def test_targets_score_one_and_every_chance_baseline_stays_below_a_tenth(suite) -> None:
    for eval_set in suite.sets:
        instructions = list(eval_set.instructions)
        assert all(overall(score(i.meta, i.target)) == 1.0 for i in instructions), eval_set.name
        images = baseline_images(eval_set, suite.baselines)
        assert {"mean colour", "another target", "background"} <= set(images)
        for name, made in images.items():
            sc = sum(overall(score(i.meta, image)) for i, image in zip(instructions, made)) / len(instructions)
            assert sc < 0.1, (eval_set.name, name, sc)


def test_a_bad_split_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown split 'test'"):
        TextToImage(num_examples=1, split="test")
    with pytest.raises(ValueError, match="unknown split"):
        World(0, "validation")
