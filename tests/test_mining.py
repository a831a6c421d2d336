"""`python -m zoo mine`: exact neighbours, near-duplicate removal, the on-disk cache, and Retrieval reading it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from zoo.cli import main
from zoo.sources import DatasetSource

FAMILIES = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three colour families of five images each, plus an exact duplicate of red0 (row 15)."""
    root = tmp_path_factory.mktemp("pairs")
    rows = []
    for name, colour in FAMILIES.items():
        for j in range(5):
            image = Image.new("RGB", (32, 32), colour)
            ImageDraw.Draw(image).ellipse([4 * j, 4 * j, 4 * j + 10, 4 * j + 10], fill=(255, 255, 255))
            image.save(root / f"{name}{j}.png")
            rows.append({"img": f"{name}{j}.png", "text": f"a {name} picture"})
    rows.append({"img": "red0.png", "text": "a copy"})
    (root / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def run_mine(pairs: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "mine",
            "--source",
            str(pairs / "rows.jsonl"),
            "--image-column",
            "img",
            "--caption-column",
            "text",
            "--out",
            str(out),
            "--features",
            "handcrafted",
            "--cache",
            str(pairs / "cache"),
            *extra,
        ]
    )


def test_mine_finds_family_neighbours_without_duplicates(pairs: Path, tmp_path: Path, capsys) -> None:
    import datasets

    assert run_mine(pairs, tmp_path / "mined", "--k", "3") == 0
    assert "Mined dataset written to" in capsys.readouterr().out
    mined = datasets.load_from_disk(str(tmp_path / "mined"))
    neighbours = mined["neighbours"]
    assert len(mined) == 16 and all(len(ns) == 3 for ns in neighbours)
    family = [row // 5 if row < 15 else 0 for row in range(16)]
    for row, ns in enumerate(neighbours):
        assert row not in ns and all(family[n] == family[row] for n in ns)
    assert 15 not in neighbours[0] and 0 not in neighbours[15]  # the duplicate pair never pair up
    # the embeddings were cached under a key of the dataset and the extractor; a second run reuses them
    cached = list((pairs / "cache").glob("*/embeddings.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert run_mine(pairs, tmp_path / "again", "--k", "3") == 0
    assert cached[0].stat().st_mtime_ns == stamp
    assert datasets.load_from_disk(str(tmp_path / "again"))["neighbours"] == neighbours


def test_retrieval_task_reads_the_mined_dataset(pairs: Path, tmp_path: Path) -> None:
    from tasks.retrieval import Retrieval

    assert run_mine(pairs, tmp_path / "mined") == 0
    task = Retrieval(source=DatasetSource(str(tmp_path / "mined")), image_size=16)
    instruction = task[0]
    assert len(instruction.context) == 3 and instruction.target.shape == (3, 16, 16)


def test_bad_options_and_missing_faiss_are_clear(pairs: Path, tmp_path: Path, capsys) -> None:
    assert run_mine(pairs, tmp_path / "x", "--k", "2") == 2
    assert "--k" in capsys.readouterr().err
    try:
        import faiss  # noqa: F401
    except ImportError:
        assert run_mine(pairs, tmp_path / "x", "--index", "faiss") == 2
        assert "pip install faiss-cpu" in capsys.readouterr().err


def test_an_unreadable_row_is_nobodys_neighbour(pairs: Path, tmp_path: Path, capsys) -> None:
    import datasets

    rows = (pairs / "rows.jsonl").read_text() + '\n{"img": "missing.png", "text": "gone"}'
    (tmp_path / "rows.jsonl").write_text(rows)
    for png in pairs.glob("*.png"):
        (tmp_path / png.name).write_bytes(png.read_bytes())
    assert (
        main(
            [
                "mine",
                "--source",
                str(tmp_path / "rows.jsonl"),
                "--image-column",
                "img",
                "--caption-column",
                "text",
                "--out",
                str(tmp_path / "mined"),
                "--features",
                "handcrafted",
                "--cache",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    assert "1 unreadable" in capsys.readouterr().out
    neighbours = datasets.load_from_disk(str(tmp_path / "mined"))["neighbours"]
    assert neighbours[16] == [] and all(16 not in ns for ns in neighbours)
