"""DreamBench's folder layout (google/dreambooth's `dataset/`) read as rows, so no `rows.csv` has to be written.

The layout: one folder of photos per subject (`backpack/00.jpg`, `dog2/03.jpg`, ...) and `prompts_and_classes.txt`,
which lists each subject's class ("subject_name,class" lines: `bear_plushie,stuffed animal`) and the benchmark's
prompt templates, one list for objects and one for live subjects (cats and dogs), written as Python lines
`'a {0} {1} in the jungle'.format(unique_token, class_token),`.

Rows have the columns of a grouped subject dataset — `id`, `group` (the subject folder), `image` (a path relative
to the folder), `subject` (the class, e.g. "stuffed animal") and `caption` — in one of two splits:

- "train": one row per photo, captioned "a photo of a <class>" (DreamBooth's instance prompt with the class name in
  place of its rare token): true of the photo, so fit to train on.
- "prompts": the benchmark, one row per (subject, prompt), the prompt filled with the class name as subject ("a
  stuffed animal in the jungle"); its image is one of the subject's photos in turn. No photo shows the prompt, so
  these rows are for evaluation (similarity to the subject's photos, and to the prompt), not for training.
"""

from __future__ import annotations

import re
from pathlib import Path

PROMPTS_FILE = "prompts_and_classes.txt"
SPLITS = ("train", "prompts")
# DreamBench's live subjects (its "Live Subject Prompts" list) are its cats and dogs.
LIVE_CLASSES = frozenset({"cat", "dog"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
_TEMPLATE = re.compile(r"""^\s*(['"])(.*\{1\}.*)\1\s*\.format\(""")


def find_root(path: Path) -> Path:
    """The folder holding the subject folders and `prompts_and_classes.txt`: `path`, or `path/dataset` (a clone)."""
    for root in (path, path / "dataset"):
        if (root / PROMPTS_FILE).is_file():
            return root
    raise ValueError(
        f"source.path {str(path)!r}: layout dreambench needs {PROMPTS_FILE} beside the subject folders "
        "(google/dreambooth's dataset/ folder)"
    )


def parse_prompts_file(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """({subject folder: class}, {"object" | "live": prompt templates with {0} = token, {1} = class})."""
    classes: dict[str, str] = {}
    prompts: dict[str, list[str]] = {"object": [], "live": []}
    section = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        lowered = text.lower()
        if lowered == "subject_name,class":
            section = "classes"
        elif lowered.endswith("prompts") and lowered.startswith(("object", "live")):
            section = "live" if lowered.startswith("live") else "object"
        elif section == "classes" and text:
            subject, _, name = text.partition(",")
            if not name.strip():
                raise ValueError(f"{path}:{number}: expected 'subject_name,class', got {text!r}")
            classes[subject.strip()] = name.strip()
        elif section == "classes":
            section = None  # the class list ends at its first blank line
        elif section in prompts and (match := _TEMPLATE.match(text)):
            prompts[section].append(match.group(2))
    if not classes:
        raise ValueError(f"{path}: no 'subject_name,class' list found")
    if not prompts["object"] or not prompts["live"]:
        raise ValueError(f"{path}: expected an 'Object Prompts' and a 'Live Subject Prompts' list of templates")
    return classes, prompts


def fill(template: str, name: str) -> str:
    """A prompt template with the class name as its subject and no rare token: "a {0} {1} in the snow" → "a dog in
    the snow"."""
    return " ".join(template.format("", name).split())


def _row(subject: str, photo: str, name: str, caption: str, row_id: str) -> dict:
    return {"id": row_id, "group": subject, "image": f"{subject}/{photo}", "subject": name, "caption": caption}


def read_dreambench(path: Path, split: str) -> tuple[list[dict], Path]:
    """The rows of a DreamBench folder (see the module docstring) and the folder their image paths are relative to."""
    if split not in SPLITS:
        raise ValueError(f"source.split {split!r}: layout dreambench has the splits {list(SPLITS)}")
    root = find_root(path)
    classes, prompts = parse_prompts_file(root / PROMPTS_FILE)
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            continue
        if folder.name not in classes:
            raise ValueError(
                f"{root / PROMPTS_FILE}: no class for subject folder {folder.name!r}; add a line "
                f"'{folder.name},<class>' to its subject_name,class list"
            )
        name = classes[folder.name]
        if split == "train":
            rows += [
                _row(folder.name, photo, name, f"a photo of a {name}", f"{folder.name}/{photo}") for photo in photos
            ]
        else:
            templates = prompts["live" if name in LIVE_CLASSES else "object"]
            for k, template in enumerate(templates):
                caption = fill(template, name)
                rows.append(_row(folder.name, photos[k % len(photos)], name, caption, f"{folder.name}: {caption}"))
    if not rows:
        raise ValueError(f"source.path {str(root)!r}: layout dreambench found no subject folder of photos")
    return rows, root
