"""The text-embedding cache: a dataset's texts embedded once, to disk, so training does not run the text encoder.

Layout: `<root>/<encoder fingerprint>/shard-NNNNN.safetensors`. Every entry is keyed by the sha256 of its text and
holds the real-token rows of the embedding (`<key>.emb`, (n, D)) and the attention mask (`<key>.mask`, (L,) uint8);
padding rows are zero by construction (`TextEncoder` zeroes them), so the full (L, D) embedding is rebuilt exactly.
Shards are memory-mapped safetensors (never pickles), opened lazily, and only ever added: a build writes new shards
for the texts not there yet.

Precision (kohya-ss/sd-scripts#1413: cached embeddings reused under another precision). Each shard records the dtype
its embeddings were made in (`dtype` in its metadata, the encoder's `compute_dtype`; `dtypes` reads it back), rows
come out cast to the reading encoder's dtype, so cached and freshly encoded rows of one batch agree, and the stage
casts them to its network's dtype (a `bf16-true` run or a bf16 pipeline). An encoder kept in another dtype has other
weights, hence another fingerprint: it never reads this encoder's rows.

The fingerprint (`TextEncoder.fingerprint`) hashes the encoder's class, config, weights, tokenizer, max_length and
marker mode, so a different encoder reads a different folder and can never get stale hits. Build it with
`python -m zoo cache-text --config recipe.yaml` (texts from the recipe's tasks; `model.text_cache` names the root),
or `TextEmbeddingCache.build(encoder, texts)` from Python; `InstructImagen(text_cache=root)` reads it, and runs the
encoder only for texts it lacks (a live augmentation, a user's prompt).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zoo.models.text import TextEncoder

ENTRIES_PER_SHARD = 4096


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TextEmbeddingCache:
    """Embeddings of one encoder (by fingerprint) under `root`.

    Args:
        root: the cache root folder (created on the first build).
        encoder: the encoder whose embeddings this cache holds; its fingerprint picks the sub-folder.
    """

    def __init__(self, root: str | Path, encoder: TextEncoder) -> None:
        self.root = Path(root)
        self.fingerprint = encoder.fingerprint
        self.max_length, self.dim = encoder.max_length, encoder.dim
        self.folder = self.root / self.fingerprint
        self._index: dict[str, Path] = {}
        self.dtypes: dict[Path, str] = {}  # each shard's recorded dtype ("float32" for shards written before it was)
        self._handles: dict[Path, object] = {}
        self.hits = self.misses = 0
        for shard in sorted(self.folder.glob("shard-*.safetensors")):
            self._index_shard(shard)

    def _index_shard(self, shard: Path) -> None:
        with safe_open(shard, framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("fingerprint") != self.fingerprint:
                raise ValueError(
                    f"text cache shard {shard} belongs to encoder {metadata.get('fingerprint')!r}, "
                    f"not to {self.fingerprint!r}"
                )
            self.dtypes[shard] = metadata.get("dtype", "float32")
            for name in f.keys():
                if name.endswith(".emb"):
                    self._index[name[: -len(".emb")]] = shard

    def __getstate__(self) -> dict:
        # Open file handles do not copy or pickle (Lightning's EMA deep-copies the module); they reopen lazily.
        return {**self.__dict__, "_handles": {}}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._index

    def _read(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        shard = self._index[key]
        if shard not in self._handles:
            self._handles[shard] = safe_open(shard, framework="pt")
        handle = self._handles[shard]
        rows, mask = handle.get_tensor(f"{key}.emb"), handle.get_tensor(f"{key}.mask").bool()
        embedding = rows.new_zeros(self.max_length, self.dim)
        embedding[mask] = rows
        return embedding, mask

    def encode(self, encoder: TextEncoder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `encoder(texts)`, reading cached texts from disk and running the encoder on the rest only.

        Returns:
            embeddings (B, L, D) in the encoder's `compute_dtype` (cached rows are cast) and mask (B, L) bool, on the
            encoder's device.
        """
        keys = [text_key(text) for text in texts]
        missing = [i for i, key in enumerate(keys) if key not in self._index]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        device = next(encoder.parameters()).device
        if len(missing) == len(texts):
            return encoder(texts)
        found = [self._read(key) if key in self._index else None for key in keys]
        if missing:
            computed, computed_mask = encoder([texts[i] for i in missing])
            for row, i in enumerate(missing):
                found[i] = (computed[row].cpu(), computed_mask[row].cpu())
        embeddings = torch.stack([e.to(encoder.compute_dtype) for e, _ in found]).to(device)
        masks = torch.stack([m for _, m in found]).to(device)
        return embeddings, masks

    def build(self, encoder: TextEncoder, texts: Iterable[str], batch_size: int = 64) -> int:
        """Embeds the texts not cached yet and writes them as new shards. Returns how many were added."""
        if encoder.fingerprint != self.fingerprint:
            raise ValueError(
                "this cache belongs to another text encoder (fingerprints differ); open one for this encoder"
            )
        todo = list(dict.fromkeys(t for t in texts if text_key(t) not in self._index))
        self.folder.mkdir(parents=True, exist_ok=True)
        shard_number = len(list(self.folder.glob("shard-*.safetensors")))
        for start in range(0, len(todo), ENTRIES_PER_SHARD):
            chunk = todo[start : start + ENTRIES_PER_SHARD]
            tensors: dict[str, torch.Tensor] = {}
            for b in range(0, len(chunk), batch_size):
                batch = chunk[b : b + batch_size]
                embeddings, masks = encoder(batch)
                for text, embedding, mask in zip(batch, embeddings.cpu(), masks.cpu()):
                    key = text_key(text)
                    tensors[f"{key}.emb"] = embedding[mask].contiguous()
                    tensors[f"{key}.mask"] = mask.to(torch.uint8)
            shard = self.folder / f"shard-{shard_number:05d}.safetensors"
            # Written under a temporary name and renamed: an interrupted build never leaves a half shard behind.
            partial = shard.with_suffix(".partial")
            save_file(
                tensors,
                str(partial),
                metadata={
                    "fingerprint": self.fingerprint,
                    "max_length": str(self.max_length),
                    "dtype": str(encoder.compute_dtype).removeprefix("torch."),
                },
            )
            partial.rename(shard)
            self._index_shard(shard)
            shard_number += 1
        return len(todo)
