"""Neighbour mining for stage 1: `python -m zoo mine` turns (image, caption) pairs into retrieval clusters.

Paper §3.2 (following Re-Imagen): images are embedded (CLIP there), each image's top-10 nearest neighbours are the
candidates, near-duplicates are removed ("removing images with high similarity"), and each target is trained with
three neighbours as context. Here:

1. embed every image with a `zoo.eval.features` extractor (a local CLIP or DINO folder, or the offline stand-ins);
   the embeddings are cached to disk under a key of the dataset's fingerprint and the extractor's name;
2. find each row's `candidates` nearest rows: exact (chunked matrix products, fine to a few hundred thousand rows)
   or an approximate FAISS index through `datasets.Dataset.add_faiss_index` (needs `pip install faiss-cpu`), as
   millions of pairs require;
3. drop candidates whose similarity to the target is at least `dedup` (near-duplicates) and keep the best `k`;
4. write the pairs plus a `neighbours` column (row positions) with `save_to_disk`, which `tasks.retrieval.Retrieval`
   reads (`source: {path: OUT}`); rows with fewer than 3 neighbours are skipped there, as the paper drops small
   clusters.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from zoo.sources import DatasetSource, SourceRows, fit_square

EMBED_SIZE = 224  # images are square-cropped to this before the extractor's own preprocessing
EXACT_LIMIT = 200_000  # `auto` switches to FAISS above this many rows (when faiss is importable)


def dataset_key(rows: SourceRows, source: DatasetSource, features_name: str) -> str:
    """A cache key: the dataset's fingerprint (Arrow datasets) or its source description, and the extractor."""
    fingerprint = getattr(rows._rows, "_fingerprint", None) or json.dumps(
        [source.path, source.split, source.skip, source.max_rows, len(rows)]
    )
    digest = hashlib.sha256(f"{fingerprint}|{source.columns}|{features_name}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", features_name).strip("-")[:40]
    return f"{digest}-{slug}"


def embed_rows(rows: SourceRows, features, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) unit embeddings of the `image` column and (N,) bool: rows whose image could be read."""
    vectors: list[torch.Tensor] = []
    valid = torch.ones(len(rows), dtype=torch.bool)
    for start in range(0, len(rows), batch_size):
        images = []
        for index in range(start, min(start + batch_size, len(rows))):
            try:
                image = fit_square(rows.image(index, "image"), EMBED_SIZE)
            except (ValueError, OSError):  # unreadable: embeds as zeros and never becomes anyone's neighbour
                valid[index], image = False, None
            images.append(image)
        pixels = torch.stack(
            [
                TF.to_dtype(TF.to_image(im), torch.float32, scale=True) * 2 - 1
                if im is not None
                else torch.zeros(3, EMBED_SIZE, EMBED_SIZE)
                for im in images
            ]
        )
        vectors.append(features.encode_image(pixels).float())
    embeddings = torch.cat(vectors)
    embeddings[~valid] = 0
    return embeddings, valid


def exact_topk(
    embeddings: torch.Tensor, valid: torch.Tensor, count: int, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, count) similarities and row indices of each row's nearest other valid rows, by exact cosine similarity."""
    n = len(embeddings)
    count = min(count, max(n - 1, 1))
    sims, indices = [], []
    for start in range(0, n, chunk):
        block = embeddings[start : start + chunk] @ embeddings.T  # (c, N)
        block[:, ~valid] = -float("inf")
        rows = torch.arange(start, min(start + chunk, n))
        block[torch.arange(len(rows)), rows] = -float("inf")  # never one's own neighbour
        s, i = block.topk(count, dim=1)
        sims.append(s), indices.append(i)
    return torch.cat(sims), torch.cat(indices)


def faiss_topk(
    embeddings: torch.Tensor, valid: torch.Tensor, count: int, index_file: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like `exact_topk` through a FAISS inner-product index (`datasets.Dataset.add_faiss_index`), cached on disk."""
    try:
        import faiss
    except ImportError as error:
        raise ValueError("--index faiss needs the faiss package: pip install faiss-cpu (or faiss-gpu)") from error
    import datasets
    import numpy as np

    table = datasets.Dataset.from_dict({"embeddings": embeddings.numpy().astype(np.float32)})
    if index_file.is_file():
        table.load_faiss_index("embeddings", str(index_file))
    else:
        table.add_faiss_index("embeddings", metric_type=faiss.METRIC_INNER_PRODUCT)
        table.save_faiss_index("embeddings", str(index_file))
    queries = embeddings.numpy().astype(np.float32)
    scores, ids = table.search_batch("embeddings", queries, k=count + 1)  # +1: each row finds itself
    sims = torch.full((len(embeddings), count), -float("inf"))
    indices = torch.zeros(len(embeddings), count, dtype=torch.long)
    for row, (row_scores, row_ids) in enumerate(zip(scores, ids)):
        keep = [(s, i) for s, i in zip(row_scores, row_ids) if i != row and i >= 0 and valid[i]][:count]
        for slot, (s, i) in enumerate(keep):
            sims[row, slot], indices[row, slot] = float(s), int(i)
    return sims, indices


def select_neighbours(sims: torch.Tensor, indices: torch.Tensor, k: int, dedup: float) -> list[list[int]]:
    """Per row, the best `k` candidates that are not near-duplicates of it (similarity < `dedup`)."""
    return [
        [int(i) for s, i in zip(srow.tolist(), irow.tolist()) if s != -float("inf") and s < dedup][:k]
        for srow, irow in zip(sims, indices)
    ]


def mine(
    source: DatasetSource,
    out: Path,
    features: str = "auto",
    k: int = 4,
    candidates: int = 10,
    dedup: float = 0.95,
    index: str = "auto",
    cache: Path = Path("cache/mining"),
) -> dict[str, object]:
    """Mines neighbours for `source` and writes the pairs + `neighbours` to `out`; returns a summary."""
    import datasets

    from zoo.eval.features import load_features

    if k < 3:
        raise ValueError(f"--k must be at least 3 (the paper's three context pairs), got {k}")
    if candidates < k:
        raise ValueError(f"--candidates ({candidates}) must be at least --k ({k})")
    if index not in ("auto", "exact", "faiss"):
        raise ValueError(f"--index must be auto, exact or faiss, got {index!r}")
    rows = SourceRows(source, ("image", "caption"), (), "mine")
    extractor = load_features(features)
    folder = cache / dataset_key(rows, source, extractor.name)
    folder.mkdir(parents=True, exist_ok=True)
    embedding_file = folder / "embeddings.pt"
    if embedding_file.is_file():
        saved = torch.load(embedding_file, weights_only=True)
        embeddings, valid = saved["embeddings"], saved["valid"]
    else:
        embeddings, valid = embed_rows(rows, extractor)
        torch.save({"embeddings": embeddings, "valid": valid}, embedding_file)
    use_faiss = index == "faiss" or (index == "auto" and len(rows) > EXACT_LIMIT and _has_faiss())
    if use_faiss:
        sims, found = faiss_topk(embeddings, valid, candidates, folder / "faiss.index")
    else:
        sims, found = exact_topk(embeddings, valid, candidates)
    neighbours = select_neighbours(sims, found, k, dedup)
    neighbours = [ns if valid[row] else [] for row, ns in enumerate(neighbours)]
    # the pairs as the task reads them (images as bytes, so the output does not depend on the source's folder)
    table = datasets.Dataset.from_generator(
        _rows_with_images,
        gen_kwargs={"rows": rows, "neighbours": neighbours},
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "caption": datasets.Value("string"),
                "neighbours": datasets.Sequence(datasets.Value("int64")),
            }
        ),
    )
    table.save_to_disk(str(out))
    usable = sum(len(ns) >= 3 for ns in neighbours)
    near_duplicates = int(((sims >= dedup) & (sims != -float("inf"))).sum())
    return {
        "rows": len(rows),
        "usable": usable,
        "unreadable": int((~valid).sum()),
        "near_duplicates": near_duplicates,
        "index": "faiss" if use_faiss else "exact",
        "features": extractor.name,
        "cache": str(folder),
        "out": str(out),
    }


def _rows_with_images(rows: SourceRows, neighbours: list[list[int]]):
    import io

    for index, ns in enumerate(neighbours):
        try:
            image = rows.image(index, "image")
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            picture = {"bytes": buffer.getvalue(), "path": None}
            text = rows.text(index, "caption")
        except (ValueError, OSError):  # unreadable: keeps its position (neighbours are positions), no content
            picture, text, ns = None, "", []
        yield {"image": picture, "caption": text, "neighbours": ns}


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True
