"""Real dataset formats read without glue: ClassLabel columns as names, InstructPix2Pix editing rows (no mask),
art collections paired by artist or style, and DreamBench's folder of subjects. Each test builds a tiny copy of the
real layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.editing import Editing
from tasks.styled_generation import StyledGeneration
from tasks.text_to_image import TextToImage
from zoo.sources import DatasetSource
from zoo.task import BadExample

SIZE = 16


def photo(index: int, size: tuple[int, int] = (24, 20)) -> Image.Image:
    rng = np.random.default_rng(index)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1


# ClassLabel columns --------------------------------------------------------------------------------------------------


def test_an_imagefolder_label_reads_as_its_class_name(tmp_path: Path) -> None:
    for index, name in enumerate(["golden_retriever", "golden_retriever", "tabby cat"]):
        (tmp_path / "pets" / name).mkdir(parents=True, exist_ok=True)
        photo(index).save(tmp_path / "pets" / name / f"{index}.png")
    task = TextToImage(source=DatasetSource(path=str(tmp_path / "pets"), columns={"caption": "label"}), image_size=SIZE)
    assert sorted(instruction.meta["caption"] for instruction in task) == [
        "golden retriever",
        "golden retriever",
        "tabby cat",
    ]


def wikiart(tmp_path: Path, artists: list[int], styles: list[int], genres: list[int], fmt: str) -> str:
    """A WikiArt-shaped dataset (huggan/wikiart: image + ClassLabel artist, genre, style) as parquet or save_to_disk."""
    import datasets

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "artist": datasets.ClassLabel(names=["Unknown Artist", "vincent-van-gogh", "claude-monet"]),
            "genre": datasets.ClassLabel(names=["landscape", "portrait", "still_life"]),
            "style": datasets.ClassLabel(names=["Impressionism", "Post_Impressionism"]),
        }
    )
    rows = {
        "image": [photo(i) for i in range(len(artists))],
        "artist": artists,
        "genre": genres,
        "style": styles,
    }
    dataset = datasets.Dataset.from_dict(rows, features=features)
    if fmt == "parquet":
        (tmp_path / "wikiart").mkdir()
        dataset.to_parquet(str(tmp_path / "wikiart" / "train-0.parquet"))
        return str(tmp_path / "wikiart" / "*.parquet")
    dataset.save_to_disk(str(tmp_path / "wikiart"))
    return str(tmp_path / "wikiart")


@pytest.mark.parametrize("fmt", ["parquet", "save_to_disk"])
def test_wikiart_classlabels_read_as_names_and_a_missing_label_is_a_bad_row(tmp_path: Path, fmt: str) -> None:
    path = wikiart(tmp_path, artists=[1, 2, 0], styles=[1, 0, 0], genres=[2, 0, -1], fmt=fmt)
    task = TextToImage(source=DatasetSource(path=path, columns={"caption": "genre"}), image_size=SIZE)
    assert [task[i].meta["caption"] for i in range(2)] == ["still life", "landscape"]
    with pytest.raises(BadExample, match=re.escape("row 2: caption has no class ('genre' is -1)")):
        task[2]
    by_style = TextToImage(source=DatasetSource(path=path, columns={"caption": "style"}), image_size=SIZE)
    assert by_style[0].meta["caption"] == "Post Impressionism"
    by_artist = TextToImage(source=DatasetSource(path=path, columns={"caption": "artist"}), image_size=SIZE)
    assert by_artist[0].meta["caption"] == "vincent-van-gogh"


# InstructPix2Pix editing ---------------------------------------------------------------------------------------------


def ip2p(tmp_path: Path, source_column: str = "input_image", count: int = 3) -> str:
    """An InstructPix2Pix-shaped parquet file: (source, edit_prompt, edited) with images as bytes, no mask."""
    import datasets

    columns = {
        source_column: [photo(i) for i in range(count)],
        "edit_prompt": [f"make it snowy {i}" for i in range(count)],
        "edited_image": [photo(i + 10) for i in range(count)],
    }
    if source_column == "original_image":  # timbrooks/instructpix2pix-clip-filtered also keeps both captions
        columns["original_prompt"] = ["a field"] * count
        columns["edited_prompt"] = ["a snowy field"] * count
    dataset = datasets.Dataset.from_dict(columns)
    dataset = dataset.cast_column(source_column, datasets.Image()).cast_column("edited_image", datasets.Image())
    (tmp_path / "ip2p").mkdir()
    dataset.to_parquet(str(tmp_path / "ip2p" / "train-0.parquet"))
    return str(tmp_path / "ip2p" / "*.parquet")


@pytest.mark.parametrize("source_column", ["input_image", "original_image"])
def test_instructpix2pix_rows_read_unmapped_with_a_full_mask(tmp_path: Path, source_column: str) -> None:
    task = Editing(source=DatasetSource(path=ip2p(tmp_path, source_column)), image_size=SIZE)
    assert len(task) == 3
    instruction = task[1]
    assert instruction.text.endswith("make it snowy 1")
    assert [item.prompt for item in instruction.context] == ["[ref#1] mask", "[ref#2] content image"]
    assert torch.equal(instruction.mask, torch.ones(1, SIZE, SIZE))  # the whole image may change
    assert torch.equal(instruction.context[0].image, torch.ones(3, SIZE, SIZE))  # the mask item is all white
    expected_source = photo(1).resize((19, 16), Image.Resampling.BICUBIC).crop((1, 0, 17, 16))
    assert torch.equal(instruction.context[1].image, as_tensor(expected_source))
    expected_target = photo(11).resize((19, 16), Image.Resampling.BICUBIC).crop((1, 0, 17, 16))
    assert torch.equal(instruction.target, as_tensor(expected_target))


def test_a_mapping_wins_over_instructpix2pix_names_and_missing_columns_never_ask_for_a_mask(tmp_path: Path) -> None:
    import datasets

    path = ip2p(tmp_path)
    mapped = Editing(source=DatasetSource(path=path, columns={"instruction": "edit_prompt"}), image_size=SIZE)
    assert mapped[0].text.endswith("make it snowy 0")
    (tmp_path / "other").mkdir()
    datasets.Dataset.from_dict({"before": [b"x"], "prompt": ["a"], "after": [b"y"]}).to_parquet(
        str(tmp_path / "other" / "rows.parquet")
    )
    with pytest.raises(ValueError) as error:
        Editing(source=DatasetSource(path=str(tmp_path / "other" / "rows.parquet")))
    message = str(error.value)
    assert "has no source_img, instruction, target_img column" in message
    assert "available columns: ['before', 'prompt', 'after']" in message
    assert "columns: {source_img: <column>, instruction: <column>, target_img: <column>}" in message
    assert "mask_img:" not in message  # optional: never asked for


# Styled generation paired by artist or style -------------------------------------------------------------------------


def test_pair_by_artist_makes_style_reference_and_target_from_one_artist(tmp_path: Path) -> None:
    artists = [1, 1, 1, 2, 2, 0, -1]  # van Gogh ×3, Monet ×2, one unknown artist alone, one unlabelled
    path = wikiart(tmp_path, artists=artists, styles=[1] * 7, genres=[0, 1, 2, 0, 1, 2, 0], fmt="parquet")
    task = StyledGeneration(
        source=DatasetSource(path=path, columns={"caption": "genre"}), pair_by="artist", image_size=SIZE
    )
    assert len(task) == 5  # the lone and the unlabelled painting make no example
    targets = []
    for index in range(len(task)):
        instruction = task[index]
        row, reference = instruction.meta["row_id"], instruction.meta["style_row_id"]
        assert row != reference and artists[row] == artists[reference]
        assert instruction.meta["caption"] in instruction.text and "[ref#1]" in instruction.text
        assert [item.prompt for item in instruction.context] == ["a [ref#1] style image"]
        expected = photo(reference).resize((19, 16), Image.Resampling.BICUBIC).crop((1, 0, 17, 16))
        assert torch.equal(instruction.context[0].image, as_tensor(expected))
        targets.append(row)
    assert sorted(targets) == [0, 1, 2, 3, 4]
    again = StyledGeneration(
        source=DatasetSource(path=path, columns={"caption": "genre"}), pair_by="artist", image_size=SIZE
    )
    assert [again[i].meta["style_row_id"] for i in range(5)] == [task[i].meta["style_row_id"] for i in range(5)]


def test_pair_exclude_keeps_unknown_artists_apart(tmp_path: Path) -> None:
    path = wikiart(tmp_path, artists=[0, 0, 0, 1, 1], styles=[0] * 5, genres=[0] * 5, fmt="parquet")
    source = DatasetSource(path=path, columns={"caption": "genre"})
    assert len(StyledGeneration(source=source, pair_by="artist")) == 5
    task = StyledGeneration(source=source, pair_by="artist", pair_exclude=["Unknown Artist"])
    assert sorted(task[i].meta["row_id"] for i in range(len(task))) == [3, 4]
    with pytest.raises(ValueError, match="pair_exclude names values of the pair_by column; set pair_by"):
        StyledGeneration(source=source, pair_exclude=["Unknown Artist"])


def test_pair_by_style_and_its_mistakes(tmp_path: Path) -> None:
    path = wikiart(tmp_path, artists=[1, 2, 1, 2], styles=[0, 0, 1, 1], genres=[0, 1, 2, 0], fmt="save_to_disk")
    task = StyledGeneration(source=DatasetSource(path=path, columns={"caption": "genre"}), pair_by="style")
    assert {(task[i].meta["row_id"], task[i].meta["style_row_id"]) for i in range(len(task))} == {
        (0, 1),
        (1, 0),
        (2, 3),
        (3, 2),
    }
    first = StyledGeneration(
        source=DatasetSource(path=path, columns={"caption": "genre"}), pair_by="artist", num_examples=2
    )
    assert [first[i].meta["row_id"] for i in range(2)] == [0, 1]  # the first rows, not the first artist's
    with pytest.raises(ValueError, match="pair_by 'style' pairs the rows of a dataset; set a source"):
        StyledGeneration(pair_by="style")
    with pytest.raises(ValueError, match=re.escape("has no column 'school'")):
        StyledGeneration(source=DatasetSource(path=path, columns={"caption": "genre"}), pair_by="school")


# DreamBench ----------------------------------------------------------------------------------------------------------

# The start of google/dreambooth's dataset/prompts_and_classes.txt, in its own layout (two prompts per list here).
PROMPTS_AND_CLASSES = """Classes

subject_name,class
bear_plushie,stuffed animal
dog2,dog

Prompts

Object Prompts

prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a red {0} {1}'.format(unique_token, class_token)
]

Live Subject Prompts

prompt_list = [
'a {0} {1} wearing a red hat'.format(unique_token, class_token),
'a {0} {1} in the snow'.format(unique_token, class_token),
'a cube shaped {0} {1}'.format(unique_token, class_token)
]
"""


def dreambench(root: Path, photos: dict[str, int]) -> Path:
    """A DreamBench clone: dataset/<subject>/NN.jpg, prompts_and_classes.txt and the licence list beside them."""
    folder = root / "dreambooth" / "dataset"
    count = 0
    for subject, number in photos.items():
        (folder / subject).mkdir(parents=True)
        for k in range(number):
            photo(count).save(folder / subject / f"{k:02d}.jpg", quality=95)
            count += 1
    (folder / "prompts_and_classes.txt").write_text(PROMPTS_AND_CLASSES)
    (folder / "references_and_licenses.txt").write_text("bear_plushie: https://example.org CC-BY\n")
    return folder


def test_dreambench_photos_become_subject_rows_named_by_class(tmp_path: Path) -> None:
    from tasks.subject_driven import SubjectDriven

    dreambench(tmp_path, {"bear_plushie": 3, "dog2": 2})
    source = DatasetSource(path=str(tmp_path / "dreambooth"), layout="dreambench")  # a clone's root works too
    task = SubjectDriven(source=source, image_size=SIZE)
    assert len(task) == 5  # every photo is a target once
    by_target = {task[i].meta["row_id"]: task[i] for i in range(len(task))}
    assert sorted(by_target) == [f"bear_plushie/0{k}.jpg" for k in range(3)] + ["dog2/00.jpg", "dog2/01.jpg"]
    bear = by_target["bear_plushie/01.jpg"]
    assert "[ref#1] stuffed animal" in bear.text and bear.meta["caption"] == "a photo of a stuffed animal"
    assert sorted(bear.meta["reference_row_ids"]) == ["bear_plushie/00.jpg", "bear_plushie/02.jpg"]
    assert {item.prompt for item in bear.context} == {"[ref#1] stuffed animal"}
    dog = by_target["dog2/00.jpg"]
    assert dog.meta["reference_row_ids"] == ["dog2/01.jpg"] and "[ref#1] dog" in dog.text
    target = Image.open(tmp_path / "dreambooth" / "dataset" / "dog2" / "00.jpg").convert("RGB")
    expected = target.resize((19, 16), Image.Resampling.BICUBIC).crop((1, 0, 17, 16))
    assert torch.equal(dog.target, as_tensor(expected))


def test_dreambench_prompts_pair_each_subject_with_its_prompt_list(tmp_path: Path) -> None:
    from tasks.subject_driven import SubjectDriven

    folder = dreambench(tmp_path, {"bear_plushie": 2, "dog2": 2})
    task = SubjectDriven(source=DatasetSource(path=str(folder), layout="dreambench", split="prompts"), image_size=SIZE)
    captions = sorted(task[i].meta["caption"] for i in range(len(task)))
    assert captions == sorted(
        ["a stuffed animal in the jungle", "a red stuffed animal"]  # objects get the object prompts
        + ["a dog wearing a red hat", "a dog in the snow", "a cube shaped dog"]  # cats and dogs the live ones
    )
    for index in range(len(task)):
        subject = task[index].meta["row_id"].split(":")[0]  # "dog2: a dog in the snow"
        target, references = task.index[index]
        # The reference is the subject's other photo, never the target's own (prompt rows repeat photos).
        photos = [task.rows.value(row, "image") for row in references]
        assert len(photos) == 1 and photos[0].startswith(f"{subject}/")
        assert photos[0] != task.rows.value(target, "image")


def test_dreambench_mistakes_are_one_clear_line(tmp_path: Path) -> None:
    from tasks.subject_driven import SubjectDriven

    with pytest.raises(ValueError, match="layout dreambench needs prompts_and_classes.txt beside the subject folders"):
        SubjectDriven(source=DatasetSource(path=str(tmp_path), layout="dreambench"))
    folder = dreambench(tmp_path, {"bear_plushie": 2, "teapot": 2})
    with pytest.raises(ValueError, match="no class for subject folder 'teapot'; add a line 'teapot,<class>'"):
        SubjectDriven(source=DatasetSource(path=str(folder), layout="dreambench"))
    with pytest.raises(ValueError, match=re.escape("layout dreambench has the splits ['train', 'prompts']")):
        SubjectDriven(source=DatasetSource(path=str(folder), layout="dreambench", split="test"))
    with pytest.raises(ValueError, match="source.layout must be 'dreambench' or null"):
        DatasetSource(path=str(folder), layout="dreambooth")


def test_rows_sharing_a_photo_are_never_each_others_reference(tmp_path: Path) -> None:
    import json

    from tasks.subject_driven import SubjectDriven

    (tmp_path / "multi").mkdir()
    for k in range(2):
        photo(k).save(tmp_path / "multi" / f"{k}.png")
    rows = [{"group": "g", "image": "0.png", "caption": f"first photo, caption {k}"} for k in range(3)]
    rows.append({"group": "g", "image": "1.png", "caption": "second photo"})
    (tmp_path / "multi" / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = SubjectDriven(source=DatasetSource(path=str(tmp_path / "multi" / "rows.jsonl")), image_size=SIZE)
    assert task.index == [(0, [3]), (1, [3]), (2, [3]), (3, [0])]


def test_the_readme_yaml_shapes_build_through_jsonargparse(tmp_path: Path) -> None:
    """The YAML of README "Real formats" builds the tasks as LightningCLI does, through their typed `__init__`."""
    import yaml
    from jsonargparse import ArgumentParser

    from tasks.subject_driven import SubjectDriven

    folder = dreambench(tmp_path, {"bear_plushie": 2})
    wikiart_path = wikiart(tmp_path, artists=[1, 1, 0], styles=[0] * 3, genres=[0, 1, 2], fmt="parquet")
    config = f"""
    dreambench: {{image_size: {SIZE}, source: {{path: {folder}, layout: dreambench}}}}
    ip2p: {{image_size: {SIZE}, source: {{path: "{ip2p(tmp_path)}"}}}}
    wikiart:
      image_size: {SIZE}
      pair_by: artist
      pair_exclude: [Unknown Artist]
      source: {{path: "{wikiart_path}", columns: {{caption: genre}}}}
    """
    parser = ArgumentParser()
    for name, cls in (("dreambench", SubjectDriven), ("ip2p", Editing), ("wikiart", StyledGeneration)):
        parser.add_class_arguments(cls, name)
    tasks = parser.instantiate_classes(parser.parse_object(yaml.safe_load(config)))
    assert tasks.dreambench[0].meta["caption"] == "a photo of a stuffed animal"
    assert tasks.ip2p[0].mask.min() == 1
    assert len(tasks.wikiart) == 2 and tasks.wikiart[0].meta["caption"] == "landscape"
