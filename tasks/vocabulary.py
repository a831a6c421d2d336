"""The built-in world's vocabulary: builds `zoo/models/world_words.txt`, the word list of `builtin:*-t5-words`.

    python -m tasks.vocabulary            # rewrites the file
    python -m tasks.vocabulary --check    # exits 1 when the committed file is stale

The words come from three places, so that every word a built-in task says is one token:
- the world's constants (`tasks.world`: colours, backgrounds, shapes, patterns, position phrases, sizes, styles,
  subject names and categories) and the control conditions' names, plus `EXTRA_WORDS`;
- every template in `tasks/templates/` (placeholders and `[ref#N]` markers left out);
- the payload and context texts of the first `EMITTED_PER_TASK` examples of every task in `BUILTIN_TASKS`, which
  catches the words task code writes itself (an edit's "turn the ... into a ...", "content image").
Whenever a task, a template or the world says a new word, rerun this; tests/test_text_encoder.py fails until then.
The file only grows (new words are appended; no token moves): see `zoo.models.words`.
The tokenizer that reads the file (and how it spells out words it lacks) is `zoo.models.words`.
"""

from __future__ import annotations

import argparse
import re
import sys
from functools import cache
from pathlib import Path

from tasks.control import CONDITION_TEXT, Control
from tasks.editing import Editing
from tasks.retrieval import Retrieval
from tasks.style_transfer import StyleTransfer
from tasks.styled_generation import StyledGeneration
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import TextToImage
from tasks.world import (
    BACKGROUNDS,
    COLOURS,
    PATTERNS,
    POSITION_PHRASES,
    SHAPES,
    SIZES,
    STYLES,
    SUBJECT_KINDS,
    SUBJECT_SHAPES,
    SUBJECTS,
)
from tasks.zeroshot import COMPOSITIONS, ZeroShot
from zoo.instruction import Instruction
from zoo.models.text import MARKER
from zoo.models.words import VOCABULARY_FILE, read_vocabulary, split_words, vocabulary_tokens
from zoo.task import Task

TEMPLATES = Path(__file__).parent / "templates"
# Words captions use in general rather than for one scene ("an object", "two objects"): in before a task says them.
EXTRA_WORDS = ("an", "object", "objects")
EMITTED_PER_TASK = 128
# Every built-in task plugin in each of its variants (the entry points of pyproject.toml); images at 16 px are enough
# to read the texts.
BUILTIN_TASKS: tuple[tuple[type[Task], dict], ...] = (
    (TextToImage, {"flavour": "natural"}),
    (TextToImage, {"flavour": "art"}),
    *((Control, {"condition": condition}) for condition in CONDITION_TEXT),
    (SubjectDriven, {"kind": "object"}),
    (SubjectDriven, {"kind": "face"}),
    (StyledGeneration, {}),
    (StyleTransfer, {}),
    (Editing, {}),
    (Retrieval, {}),
    *((ZeroShot, {"composition": composition}) for composition in COMPOSITIONS),
)
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def instruction_texts(instruction: Instruction) -> list[str]:
    """The payload and every context text of an instruction: everything the text encoder reads for it."""
    return [instruction.text, *(item.text for item in instruction.context)]


@cache
def emitted_texts(seed: int = 0) -> tuple[str, ...]:
    """Payload and context texts of the first `EMITTED_PER_TASK` examples of every task in `BUILTIN_TASKS`, seeded."""
    texts = []
    for cls, kwargs in BUILTIN_TASKS:
        task = cls(**kwargs, seed=seed, num_examples=EMITTED_PER_TASK, image_size=16)
        for index in range(min(EMITTED_PER_TASK, len(task))):
            texts += instruction_texts(task[index])
    return tuple(texts)


def world_phrases() -> list[str]:
    """The world's own words, as the phrases its constants hold."""
    subjects = [part for s in SUBJECTS.values() for part in (s.name, s.category)]
    return [
        *COLOURS,
        *BACKGROUNDS,
        *SHAPES,
        *SUBJECT_SHAPES,
        *PATTERNS,
        *POSITION_PHRASES.values(),
        *SIZES,
        *STYLES,
        *subjects,
        *SUBJECT_KINDS.values(),
        *CONDITION_TEXT.values(),
        *EXTRA_WORDS,
    ]


def template_lines() -> list[str]:
    """Every template of `tasks/templates/`, comments left out."""
    lines = []
    for path in sorted(TEMPLATES.glob("*.txt")):
        lines += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and line[0] != "#"]
    return lines


def words_of(text: str) -> list[str]:
    """The words of a text or template, markers and placeholders left out (they are never words)."""
    return split_words(PLACEHOLDER.sub(" ", MARKER.sub(" ", text)))


def build_vocabulary(existing: list[str] | None = None) -> list[str]:
    """The vocabulary file's tokens, in id order: `existing` (the committed file's) and the new words after them."""
    texts = [*world_phrases(), *template_lines(), *emitted_texts()]
    return vocabulary_tokens((word for text in texts for word in words_of(text)), existing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed file is up to date")
    parser.add_argument("--out", type=Path, default=VOCABULARY_FILE)
    args = parser.parse_args(argv)
    current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
    # Append-only: ids of the tokens already there never change (zoo.models.words).
    text = "\n".join(build_vocabulary(read_vocabulary(args.out) if current is not None else None)) + "\n"
    if args.check:
        print(f"{args.out}: {'up to date' if text == current else 'stale; run python -m tasks.vocabulary'}")
        return 0 if text == current else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(text.splitlines())} tokens to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
