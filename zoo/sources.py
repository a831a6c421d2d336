"""Dataset sources: where a task's rows come from when they do not come from the built-in world.

`DatasetSource` names a Hugging Face `datasets` dataset (a hub id, a local folder — imagefolder, a folder of
parquet/JSON/CSV files or `save_to_disk` output — or data files / a glob) plus a column mapping, and is written in
YAML under a task's `source:`. `SourceRows` opens it once and hands a task typed values per row:

- `text(i, column)`: a stripped string; empty, missing or holding a `[ref#N]`-like marker → `RowError`. A
  `datasets.ClassLabel` column (an imagefolder's `label`, WikiArt's `artist`/`style`/`genre`) reads as its class
  name, underscores as spaces ("golden_retriever" → "golden retriever"); a row without a label (-1) → `RowError`.
- `image(i, column)`: an RGB PIL image, fully decoded. Image columns may hold PIL images, `datasets.Image` values,
  file paths (relative to the data folder) or bytes. Unreadable, corrupt, truncated or missing files → `RowError`.
  Grayscale, RGBA (composited on white), palette, 16-bit and CMYK images are normalised to 8-bit RGB.
- `mask(i, column)`: a binary L image (0/255); a mask that is not binary → `RowError`, unless the source sets
  `mask_threshold`, which binarises at that level instead.

`RowError` carries the row id; task plugins turn it into `zoo.task.BadExample`, which the data pipeline skips and
counts (or stops on). A missing column is not a bad row: it is a `ValueError` at construction, listing the dataset's
columns and the mapping to write.

`layout: dreambench` reads a folder that is not a table: DreamBench's subject folders and prompt list
(`zoo.dreambench`), as rows `id`, `group`, `image`, `subject`, `caption`; `split` is "train" (a row per photo) or
"prompts" (a row per subject and benchmark prompt).

Streaming (`streaming: true`) reads rows in order without downloading the whole dataset. Tasks are map-style (the
mixture draws random indices), so a streamed source is read once, at construction, into a buffer of at most
`max_rows` rows (required when streaming), images kept encoded; `skip` picks which window of the stream to buffer.
"""

from __future__ import annotations

import glob
import io
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from zoo.dreambench import read_dreambench
from zoo.instruction import find_markers, to_image_tensor

# File suffixes and the `datasets` builder that reads them.
_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv"}


class RowError(ValueError):
    """A row that cannot be read (unreadable image, missing file, empty caption, non-binary mask, ...)."""

    def __init__(self, row_id: object, reason: str) -> None:
        super().__init__(f"row {row_id!r}: {reason}")
        self.row_id, self.reason = row_id, reason


@dataclass
class DatasetSource:
    """A `datasets` dataset as a task's rows.

    Args:
        path: a hub id (needs the network), a local folder (imagefolder, parquet/JSON/CSV files, or `save_to_disk`
            output) or data files: one file or a glob of `.parquet`, `.json`, `.jsonl` or `.csv` files.
        split: the split to read.
        columns: the task's canonical column names mapped to this dataset's, e.g. `{caption: text}`; columns not
            named keep their canonical name.
        streaming: stream rows instead of downloading/preparing the whole dataset (see the module docstring).
        max_rows: read at most this many rows (required with `streaming`: the size of the buffer).
        skip: rows to skip first (with `streaming`, the window of the stream to buffer).
        name: the dataset configuration name, for hub datasets that have several.
        mask_threshold: binarise masks at this fraction of white (e.g. 0.5) instead of rejecting non-binary masks.
        layout: a folder layout that is not a table: "dreambench" (see `zoo.dreambench`; splits "train" and
            "prompts").
    """

    path: str
    split: str = "train"
    columns: dict[str, str] | None = None
    streaming: bool = False
    max_rows: int | None = None
    skip: int = 0
    name: str | None = None
    mask_threshold: float | None = None
    layout: Literal["dreambench"] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"source.path must be a non-empty string, got {self.path!r}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"source.max_rows must be at least 1, got {self.max_rows}")
        if self.streaming and self.max_rows is None:
            raise ValueError(
                f"source.max_rows is required with source.streaming (path {self.path!r}): tasks index their rows, "
                "so a stream is read into a buffer of max_rows rows"
            )
        if self.skip < 0:
            raise ValueError(f"source.skip must be ≥ 0, got {self.skip}")
        if self.mask_threshold is not None and not 0 < self.mask_threshold < 1:
            raise ValueError(f"source.mask_threshold must lie in (0, 1), got {self.mask_threshold}")
        if self.layout not in (None, "dreambench"):
            raise ValueError(f"source.layout must be 'dreambench' or null, got {self.layout!r}")
        if self.layout is not None and self.streaming:
            raise ValueError(f"source.layout {self.layout!r} reads a local folder; set streaming: false")


@dataclass
class _Opened:
    rows: Any  # a datasets.Dataset, or a list of row dicts buffered from a stream
    column_names: list[str]
    base_dir: Path | None
    image_columns: set[str] = field(default_factory=set)
    class_names: dict[str, list[str]] = field(default_factory=dict)


def _window(rows: Any, source: DatasetSource) -> Any:
    """`skip` and `max_rows` applied to a dataset or a list of rows."""
    if not source.skip and source.max_rows is None:
        return rows
    stop = len(rows) if source.max_rows is None else min(len(rows), source.skip + source.max_rows)
    start = min(source.skip, len(rows))
    return rows[start:stop] if isinstance(rows, list) else rows.select(range(start, stop))


def _open(source: DatasetSource) -> _Opened:
    local = Path(source.path).expanduser()
    if source.layout == "dreambench":
        if not local.is_dir():
            raise ValueError(f"source.path {source.path!r}: layout dreambench reads a folder, and this is none")
        rows, root = read_dreambench(local, source.split)
        return _Opened(_window(rows, source), list(rows[0]), root)

    import datasets  # deferred: importing `datasets` takes a second, and only data-backed tasks need it

    matches = sorted(glob.glob(os.path.expanduser(source.path))) if any(c in source.path for c in "*?[") else []
    if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
        if source.streaming:
            raise ValueError(f"source {source.path}: save_to_disk output is already local; set streaming: false")
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if source.split not in loaded:
                raise ValueError(f"source {source.path}: no split {source.split!r}; splits: {sorted(loaded)}")
            loaded = loaded[source.split]
        base_dir = local
    elif local.is_file() or matches:
        files = matches or [str(local)]
        suffixes = {Path(f).suffix.lower() for f in files}
        builders = {_BUILDERS.get(suffix) for suffix in suffixes}
        if len(builders) != 1 or None in builders:
            raise ValueError(
                f"source.path {source.path!r}: data files must all be one of {sorted(_BUILDERS)}, "
                f"got {sorted(suffixes)}"
            )
        kwargs = {"delimiter": "\t"} if suffixes == {".tsv"} else {}
        loaded = datasets.load_dataset(
            builders.pop(), data_files=files, split=source.split, streaming=source.streaming, **kwargs
        )
        base_dir = Path(files[0]).parent
    elif not local.is_dir() and source.path.startswith((".", "/", "~")):
        raise ValueError(f"source.path {source.path!r} is neither a folder nor data files that exist")
    else:  # a folder `load_dataset` understands, or a hub id
        loaded = datasets.load_dataset(source.path, source.name, split=source.split, streaming=source.streaming)
        base_dir = local if local.is_dir() else None

    features = loaded.features or {}
    image_columns = {name for name, feature in features.items() if isinstance(feature, datasets.Image)}
    class_names = {name: f.names for name, f in features.items() if isinstance(f, datasets.ClassLabel)}
    for name in image_columns:  # decode ourselves, so a corrupt file is one bad row and not a crash mid-epoch
        loaded = loaded.cast_column(name, datasets.Image(decode=False))
    if source.streaming:
        stream = loaded.skip(source.skip) if source.skip else loaded
        rows = list(itertools.islice(stream, source.max_rows))
        if not rows:
            raise ValueError(f"source {source.path}: the stream yielded no rows (skip={source.skip})")
        return _Opened(rows, list(features) or list(rows[0]), base_dir, image_columns, class_names)
    loaded = _window(loaded, source)
    return _Opened(loaded, list(loaded.column_names), base_dir, image_columns, class_names)


class SourceRows:
    """The rows of a `DatasetSource`, with values read by canonical column name.

    Args:
        source: the dataset.
        required: canonical columns the task needs.
        optional: canonical columns the task uses when present.
        task: the task name, for error messages.
    """

    def __init__(self, source: DatasetSource, required: tuple[str, ...], optional: tuple[str, ...], task: str) -> None:
        self.source, self.task = source, task
        mapping = dict(source.columns or {})
        unknown = sorted(set(mapping) - set(required) - set(optional))
        if unknown:
            raise ValueError(
                f"task {task!r}: source.columns maps {unknown}, which this task does not use; "
                f"its columns are {list(required)} (required) and {list(optional)} (optional)"
            )
        opened = _open(source)
        self._rows, self._base_dir, self._image_columns = opened.rows, opened.base_dir, opened.image_columns
        self._class_names = opened.class_names
        available = opened.column_names
        missing = [c for c in required if mapping.get(c, c) not in available]
        if missing:
            hint = ", ".join(f"{c}: <one of the columns above>" for c in missing)
            raise ValueError(
                f"task {task!r}: source {source.path!r} (split {source.split!r}) has no column "
                f"{', '.join(repr(mapping.get(c, c)) for c in missing)}; available columns: {available}. "
                f"Map them under source.columns, e.g. columns: {{{hint}}}"
            )
        self.available, self._mapped = available, set(mapping)
        self.columns = {c: mapping.get(c, c) for c in (*required, *optional) if mapping.get(c, c) in available}
        for c in optional:
            if c in mapping and c not in self.columns:
                raise ValueError(
                    f"task {task!r}: source.columns maps {c!r} to {mapping[c]!r}, which is not a column of "
                    f"{source.path!r}; available columns: {available}"
                )

    def __len__(self) -> int:
        return len(self._rows)

    def has(self, column: str) -> bool:
        return column in self.columns

    def classes(self, column: str) -> list[str] | None:
        """The class names of a `datasets.ClassLabel` column (its values index them; -1 is "no label"), else None."""
        return self._class_names.get(self.columns[column])

    def adopt(self, column: str, names: tuple[str, ...]) -> bool:
        """Reads canonical `column` from the first of the dataset's columns `names` (a well-known format's name for
        it), unless the source maps it or the dataset has it under its own name. Returns whether it is read now."""
        if column not in self.columns and column not in self._mapped:
            found = next((name for name in names if name in self.available), None)
            if found is not None:
                self.columns[column] = found
        return column in self.columns

    def column(self, column: str) -> list:
        """Every value of one canonical column (cheap for Arrow-backed datasets: no image is decoded)."""
        name = self.columns[column]
        if isinstance(self._rows, list):
            return [row[name] for row in self._rows]
        return list(self._rows[name])

    def file_paths(self, column: str) -> list | None:
        """The values of an image column that names files (to tell rows showing one photo apart without reading it),
        or None when the column stores the images themselves."""
        if self.columns[column] in self._image_columns:
            return None
        values = self.column(column)
        return values if all(value is None or isinstance(value, str) for value in values) else None

    def row_id(self, index: int) -> object:
        """The row's `id` column when the task maps one, else its position in the split (after `skip`)."""
        if self.has("id"):
            return self.value(index, "id")
        return self.source.skip + index

    def value(self, index: int, column: str) -> Any:
        return self._rows[index][self.columns[column]]

    def text(self, index: int, column: str) -> str:
        value = self.value(index, column)
        names = self._class_names.get(self.columns[column])
        if names is not None and isinstance(value, int):
            if not 0 <= value < len(names):  # ClassLabel's "no label" is -1
                raise RowError(self.row_id(index), f"{column} has no class ({self.columns[column]!r} is {value})")
            value = names[value].replace("_", " ")
        if value is None or not isinstance(value, str) or not value.strip():
            raise RowError(self.row_id(index), f"empty {column} ({self.columns[column]!r} is {value!r})")
        # A "[ref#N]" in dataset text would name context the row does not have: the task places the markers.
        try:
            markers = find_markers(value)
        except ValueError:  # a malformed one, e.g. "[ref1]"
            markers = [value]
        if markers:
            raise RowError(self.row_id(index), f"{column} contains a reference marker: {value!r:.80}")
        return " ".join(value.split())

    def image(self, index: int, column: str) -> Image.Image:
        """The image in `column`, decoded now and normalised to 8-bit RGB."""
        image = self._decode(index, column)
        # to_image_tensor is the one place that knows every mode (L, RGBA, P, I;16, CMYK, ...); what it refuses
        # (a 32-bit image beyond 16 bits, no pixels) is this row's fault, skipped and named like any other.
        try:
            tensor = to_image_tensor(image, name=column)
        except (ValueError, TypeError) as error:
            raise RowError(self.row_id(index), f"{column} is not a usable image ({error})") from error
        rgb = ((tensor + 1) * 127.5).round().clamp(0, 255).byte()
        return Image.fromarray(rgb.permute(1, 2, 0).numpy(), "RGB")

    def mask(self, index: int, column: str) -> Image.Image:
        """The binary mask in `column`, as an L image with values 0 and 255 (white = the masked area)."""
        image = self._decode(index, column)
        if image.mode in ("RGBA", "LA"):  # a transparent background is "outside the mask"
            background = Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        if image.mode.startswith("I"):
            array = np.asarray(image, dtype=np.float64)
            array = array / max(array.max(), 1.0)
        else:
            array = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        if self.source.mask_threshold is not None:
            array = (array >= self.source.mask_threshold).astype(np.float64)
        elif not np.all((array == 0) | (array == 1)):
            raise RowError(
                self.row_id(index),
                f"{column} is not a binary mask ({len(np.unique(array))} distinct levels); "
                "set source.mask_threshold (e.g. 0.5) to binarise masks",
            )
        return Image.fromarray((array * 255).astype(np.uint8), "L")

    def _decode(self, index: int, column: str) -> Image.Image:
        row_id = self.row_id(index)
        value = self.value(index, column)
        try:
            if isinstance(value, Image.Image):
                value.load()
                return value
            if isinstance(value, dict):  # a datasets.Image value, undecoded: {"bytes": ..., "path": ...}
                value = value.get("bytes") or value.get("path")
            if isinstance(value, (bytes, bytearray)):
                image = Image.open(io.BytesIO(value))
            elif isinstance(value, str) and value:
                path = Path(value).expanduser()
                if not path.is_absolute() and self._base_dir is not None:
                    path = self._base_dir / path
                if not path.is_file():
                    raise RowError(row_id, f"{column}: file {str(path)!r} does not exist")
                image = Image.open(path)
            else:
                raise RowError(row_id, f"{column} holds no image ({type(value).__name__} {value!r:.60})")
            image.load()  # decode now: a truncated or corrupt file fails here, on this row
            return image
        except RowError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise RowError(row_id, f"{column} is not a readable image ({type(error).__name__}: {error})") from error


def fit_square(image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """Resizes the shorter side to `size` and centre-crops to size × size (as diffusers' training scripts do).

    Images of one aspect ratio get the same crop, so a condition map stays aligned with its image.
    """
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), resample)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))
