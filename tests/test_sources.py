"""Tests of dataset sources: every on-disk format with a column mapping, streaming, missing columns, bad rows."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tasks.control import Control
from tasks.editing import Editing
from tasks.retrieval import Retrieval
from tasks.style_transfer import StyleTransfer
from tasks.styled_generation import StyledGeneration
from tasks.subject_driven import SubjectDriven
from tasks.text_to_image import TextToImage
from zoo.instruction import Instruction
from zoo.sources import DatasetSource
from zoo.task import BadExample

CAPTIONS = ["a red kite over a beach", "two cats on a sofa", "a bowl of ramen", "a lighthouse at dusk"]
SIZE = 16


def photo(index: int, size: tuple[int, int] = (24, 20), mode: str = "RGB") -> Image.Image:
    """A small picture with a gradient, different per index (non-square, to exercise the centre crop)."""
    rng = np.random.default_rng(index)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array, "RGB").convert(mode)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(folder: Path, count: int = len(CAPTIONS)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i:04d}.png" for i in range(count)]
    for i, name in enumerate(names):
        photo(i).save(folder / name)
    return names


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def check_task(task: TextToImage) -> None:
    assert len(task) == len(CAPTIONS)
    for index in range(len(task)):
        instruction = task[index]
        assert isinstance(instruction, Instruction) and instruction.task == "text_to_image"
        assert CAPTIONS[index] in instruction.text
        assert instruction.target.shape == (3, SIZE, SIZE)


# Each maker writes the four captioned photos in one format and returns (DatasetSource kwargs).
def make_jsonl(tmp_path: Path) -> dict:
    names = write_images(tmp_path / "data" / "images")
    write_jsonl(tmp_path / "data" / "rows.jsonl", [{"img": f"images/{n}", "text": c} for n, c in zip(names, CAPTIONS)])
    return {"path": str(tmp_path / "data" / "rows.jsonl")}


def make_csv(tmp_path: Path) -> dict:
    names = write_images(tmp_path / "data")
    pd.DataFrame({"img": names, "text": CAPTIONS}).to_csv(tmp_path / "data" / "rows.csv", index=False)
    return {"path": str(tmp_path / "data" / "rows.csv")}


def make_parquet(tmp_path: Path) -> dict:  # images as raw bytes in the parquet file itself
    (tmp_path / "pq").mkdir()
    frame = pd.DataFrame({"img": [png_bytes(photo(i)) for i in range(4)], "text": CAPTIONS})
    frame.to_parquet(tmp_path / "pq" / "part-0.parquet")
    return {"path": str(tmp_path / "pq" / "*.parquet")}


def make_streaming_parquet(tmp_path: Path) -> dict:
    return {**make_parquet(tmp_path), "streaming": True, "max_rows": 10}


def make_imagefolder(tmp_path: Path) -> dict:
    names = write_images(tmp_path / "folder")
    write_jsonl(tmp_path / "folder" / "metadata.jsonl", [{"file_name": n, "text": c} for n, c in zip(names, CAPTIONS)])
    return {"path": str(tmp_path / "folder"), "columns": {"image": "image", "caption": "text"}}


def make_save_to_disk(tmp_path: Path) -> dict:
    import datasets

    dataset = datasets.Dataset.from_dict({"img": [photo(i) for i in range(4)], "text": CAPTIONS})
    dataset = dataset.cast_column("img", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    return {"path": str(tmp_path / "saved")}


MAKERS = [make_jsonl, make_csv, make_parquet, make_streaming_parquet, make_imagefolder, make_save_to_disk]


@pytest.mark.parametrize("make", MAKERS, ids=lambda f: f.__name__.removeprefix("make_"))
def test_every_format_reads_with_a_column_mapping(tmp_path: Path, make) -> None:
    kwargs = {"columns": {"image": "img", "caption": "text"}, **make(tmp_path)}
    task = TextToImage(source=DatasetSource(**kwargs), image_size=SIZE)
    check_task(task)
    # Deterministic: the same index gives the same instruction.
    again = TextToImage(source=DatasetSource(**kwargs), image_size=SIZE)
    assert task[2].text == again[2].text and torch.equal(task[2].target, again[2].target)


def test_images_are_resized_on_the_shorter_side_and_centre_cropped(tmp_path: Path) -> None:
    task = TextToImage(
        source=DatasetSource(**make_jsonl(tmp_path), columns={"image": "img", "caption": "text"}), image_size=SIZE
    )
    expected = photo(0).resize((19, 16), Image.Resampling.BICUBIC).crop((1, 0, 17, 16))
    assert torch.equal(task[0].target, torch.from_numpy(np.array(expected)).permute(2, 0, 1).float() / 127.5 - 1)


def test_streaming_needs_max_rows_and_buffers_a_window(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_rows is required with source.streaming"):
        DatasetSource(path="anything", streaming=True)
    kwargs = make_parquet(tmp_path)
    task = TextToImage(
        source=DatasetSource(**kwargs, streaming=True, max_rows=2, skip=1, columns={"image": "img", "caption": "text"}),
        image_size=SIZE,
    )
    assert len(task) == 2 and CAPTIONS[1] in task[0].text and CAPTIONS[2] in task[1].text


def test_num_examples_caps_a_dataset(tmp_path: Path) -> None:
    source = DatasetSource(**make_jsonl(tmp_path), columns={"image": "img", "caption": "text"})
    assert len(TextToImage(source=source, num_examples=3, image_size=SIZE)) == 3


def test_a_missing_column_lists_the_available_ones(tmp_path: Path) -> None:
    source = DatasetSource(**make_jsonl(tmp_path), columns={"image": "img"})
    with pytest.raises(ValueError, match=re.escape("available columns: ['img', 'text']")) as error:
        TextToImage(source=source)
    assert "columns: {caption: <one of the columns above>}" in str(error.value)
    with pytest.raises(ValueError, match="does not use"):
        TextToImage(source=DatasetSource(**make_jsonl(tmp_path), columns={"picture": "img"}))


def test_a_path_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither a folder nor data files"):
        TextToImage(source=DatasetSource(path=str(tmp_path / "nope")))


def bad_rows_dataset(tmp_path: Path) -> tuple[DatasetSource, dict[int, str]]:
    """A JSON-lines dataset of good, normalisable and bad rows; returns the source and {row: expected reason}."""
    folder = tmp_path / "bad"
    folder.mkdir()
    rows, bad = [], {}

    def add(image_name: str | None, caption: str | None, reason: str | None = None) -> None:
        if reason:
            bad[len(rows)] = reason
        rows.append({"key": f"r{len(rows)}", "img": image_name, "text": caption})

    photo(0).save(folder / "good.png")
    add("good.png", "fine")
    photo(1, mode="L").save(folder / "gray.png")
    add("gray.png", "grayscale")
    photo(2, mode="RGBA").save(folder / "rgba.png")
    add("rgba.png", "with alpha")
    Image.fromarray((np.arange(24 * 20).reshape(20, 24) * 100).astype(np.uint16)).save(folder / "deep.png")
    add("deep.png", "16-bit")
    photo(3).convert("CMYK").save(folder / "cmyk.jpg")
    add("cmyk.jpg", "cmyk")
    # decodes, but holds more than 16 bits: the tensor conversion refuses it, and that is a bad row too
    Image.fromarray(np.full((20, 24), 70000, dtype=np.int32), mode="I").save(folder / "wide.tif")
    add("wide.tif", "32-bit", "not a usable image")
    (folder / "corrupt.png").write_bytes(b"this is not an image at all")
    add("corrupt.png", "corrupt", "not a readable image")
    data = png_bytes(photo(4, size=(64, 64)))
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    add("truncated.png", "truncated", "not a readable image")
    add("missing.png", "missing", "does not exist")
    add("good.png", "   ", "empty caption")
    add("good.png", None, "empty caption")
    add(None, "no image", "holds no image")
    add("good.png", "a [ref#1] in the caption", "contains a reference marker")
    write_jsonl(folder / "rows.jsonl", rows)
    source = DatasetSource(path=str(folder / "rows.jsonl"), columns={"image": "img", "caption": "text"})
    return source, bad


def test_bad_rows_are_bad_examples_naming_the_row_and_odd_modes_are_normalised(tmp_path: Path) -> None:
    source, bad = bad_rows_dataset(tmp_path)
    task = TextToImage(source=source, image_size=SIZE)
    for index in range(len(task)):
        if index in bad:
            with pytest.raises(BadExample, match=bad[index]) as error:
                task[index]
            assert error.value.row_id == index and error.value.task == "text_to_image"
            assert f"row {index}" in str(error.value)
        else:
            target = task[index].target
            assert target.shape == (3, SIZE, SIZE) and target.dtype == torch.float32
    gray = task[1].target
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # grayscale → equal RGB channels
    assert task[3].target.std() > 0.1  # 16-bit rescaled, not clipped to white


def test_an_id_column_names_bad_rows(tmp_path: Path) -> None:
    source, bad = bad_rows_dataset(tmp_path)
    source.columns = {**source.columns, "id": "key"}
    task = TextToImage(source=source, image_size=SIZE)
    index = min(bad)
    with pytest.raises(BadExample) as error:
        task[index]
    assert error.value.row_id == f"r{index}"


def editing_dataset(tmp_path: Path, masks: list[Image.Image], **kwargs) -> Editing:
    folder = tmp_path / "edits"
    folder.mkdir(exist_ok=True)
    rows = []
    for i, mask in enumerate(masks):
        photo(i).save(folder / f"src{i}.png")
        photo(i + 10).save(folder / f"tgt{i}.png")
        mask.save(folder / f"mask{i}.png")
        rows.append(
            {
                "source_img": f"src{i}.png",
                "mask_img": f"mask{i}.png",
                "instruction": f"edit number {i}",
                "target_img": f"tgt{i}.png",
            }
        )
    write_jsonl(folder / "rows.jsonl", rows)
    return Editing(source=DatasetSource(path=str(folder / "rows.jsonl"), **kwargs), image_size=SIZE)


def binary_mask(size: tuple[int, int] = (24, 20)) -> Image.Image:
    array = np.zeros((size[1], size[0]), dtype=np.uint8)
    array[4:12, 6:18] = 255
    return Image.fromarray(array, "L")


def test_editing_reads_magicbrush_columns_and_checks_masks(tmp_path: Path) -> None:
    soft = Image.fromarray(np.full((20, 24), 128, dtype=np.uint8), "L")
    task = editing_dataset(tmp_path, [binary_mask(), binary_mask((12, 10)), soft])
    instruction = task[0]
    assert instruction.text.endswith("edit number 0")
    assert [item.prompt for item in instruction.context] == ["[ref#1] mask", "[ref#2] content image"]
    assert instruction.mask.shape == (1, SIZE, SIZE) and set(instruction.mask.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(BadExample, match=r"row 1: mask_img is \(12, 10\), source_img is \(24, 20\)"):
        task[1]
    with pytest.raises(BadExample, match="row 2: mask_img is not a binary mask"):
        task[2]
    lenient = editing_dataset(tmp_path, [binary_mask(), binary_mask(), soft], mask_threshold=0.5)
    assert lenient[2].mask.min() == 1  # 128/255 ≥ 0.5 → inside


def grouped_rows(folder: Path, groups: list[object]) -> Path:
    folder.mkdir()
    rows = []
    for i, group in enumerate(groups):
        photo(i).save(folder / f"{i}.png")
        rows.append(
            {"image": f"{i}.png", "caption": f"caption {i}", "group": group, "cluster": group, "subject": "dog"}
        )
    write_jsonl(folder / "rows.jsonl", rows)
    return folder / "rows.jsonl"


def test_subject_groups_become_target_plus_references(tmp_path: Path) -> None:
    path = grouped_rows(tmp_path / "subjects", ["a", "a", "a", "b", "c", "c"])
    task = SubjectDriven(source=DatasetSource(path=str(path)), image_size=SIZE)
    assert len(task) == 5  # the lone row of group "b" has no references
    for index in range(len(task)):
        instruction = task[index]
        assert "[ref#1] dog" in instruction.text
        assert {item.prompt for item in instruction.context} == {"[ref#1] dog"}
        assert instruction.meta["row_id"] not in instruction.meta["reference_row_ids"]


def test_retrieval_clusters_need_four_rows_or_neighbour_lists(tmp_path: Path) -> None:
    path = grouped_rows(tmp_path / "clusters", [0, 0, 0, 0, 1, 1])
    task = Retrieval(source=DatasetSource(path=str(path)), image_size=SIZE)
    assert len(task) == 4
    instruction = task[0]
    assert instruction.markers == ["[ref#1]", "[ref#2]", "[ref#3]"]
    assert [item.prompt.split(" ", 1)[0] for item in instruction.context] == instruction.markers
    assert all(item.prompt.split(" ", 1)[1].startswith("caption ") for item in instruction.context)
    assert instruction.meta["row_id"] not in instruction.meta["neighbour_row_ids"]
    with pytest.raises(ValueError, match="needs a 'cluster' column"):
        Retrieval(source=DatasetSource(**make_jsonl(tmp_path), columns={"image": "img", "caption": "text"}))


def test_control_computes_edges_when_the_dataset_has_none(tmp_path: Path) -> None:
    source = DatasetSource(**make_jsonl(tmp_path), columns={"image": "img", "caption": "text"})
    edges = Control(condition="edge", source=source, image_size=SIZE)
    instruction = edges[0]
    assert instruction.context[0].prompt == "[ref#1] edge map" and instruction.task == "edge_to_image"
    assert set(instruction.context[0].image.unique().tolist()) <= {-1.0, 1.0}  # a binary edge map
    with pytest.raises(ValueError, match="has no control column, and a depth map cannot be computed offline"):
        Control(condition="depth", source=source)
    with pytest.raises(ValueError, match="HED weights"):
        Control(edge_detector="hed")


def test_control_styled_and_transfer_tasks_read_their_columns(tmp_path: Path) -> None:
    folder = tmp_path / "multi"
    write_images(folder, 2)
    rows = [
        {
            "image": f"{i:04d}.png",
            "control": f"{1 - i:04d}.png",
            "style_image": f"{1 - i:04d}.png",
            "content_image": f"{i:04d}.png",
            "caption": f"caption {i}",
        }
        for i in range(2)
    ]
    write_jsonl(folder / "rows.jsonl", rows)
    source = DatasetSource(path=str(folder / "rows.jsonl"))
    for task in (
        Control(condition="depth", source=source, image_size=SIZE),
        StyledGeneration(source=source, image_size=SIZE),
        StyleTransfer(source=source, image_size=SIZE),
    ):
        instruction = task[0]
        assert instruction.target.shape == (3, SIZE, SIZE)
        assert all(item.image.shape == (3, SIZE, SIZE) for item in instruction.context)
