"""The frozen text encoder: strings → (token embeddings, attention mask).

The paper embeds text with a frozen T5-XXL (arXiv 2401.01952 §3.1, Fig 3). Any transformers encoder works here:
`name_or_path` is a local folder (or a hub id for users with a network) holding a tokenizer and an encoder; T5-family
checkpoints load as `T5EncoderModel` so the unused decoder never takes memory.

For offline runs and tests there are built-in encoders, `builtin:tiny-t5` and `builtin:small-t5`: a T5 encoder
built from a config with seeded random weights and the byte-level ByT5 tokenizer (which needs no vocabulary
file). A frozen random encoder is still an injective, position-aware feature map of the text, which is all the
UNet's cross-attention needs to learn from; its weights are kept in checkpoints because a random init is not
something to rebuild from a name.

`[ref#N]` markers are plain text for the tokenizer (no special tokens), so any tokenizer handles them; the marker's
digits and brackets reach the UNet like any other words.
"""

from __future__ import annotations

import torch
from torch import nn

BUILTIN_ENCODERS: dict[str, dict] = {
    # d_model must match the UNet preset's cross_attention_dim (checked in InstructUNet).
    "builtin:tiny-t5": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    "builtin:small-t5": dict(d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4),
}


class TextEncoder(nn.Module):
    """A frozen transformers encoder and its tokenizer.

    Args:
        name_or_path: a `builtin:` name (see `BUILTIN_ENCODERS`), a local folder, or a hub id.
        max_length: texts are padded/truncated to this many tokens. A truncation is not silent for the user:
            `encode` keeps the first `max_length` tokens, and `max_length` is part of the saved config.
        seed: seed of the random weights of a `builtin:` encoder.
    """

    def __init__(self, name_or_path: str = "builtin:tiny-t5", max_length: int = 64, seed: int = 0) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer, ByT5Tokenizer, T5Config, T5EncoderModel

        self.name_or_path = name_or_path
        self.max_length = max_length
        if name_or_path.startswith("builtin:"):
            if name_or_path not in BUILTIN_ENCODERS:
                raise ValueError(
                    f"text_encoder {name_or_path!r} is not a built-in encoder; choose one of {sorted(BUILTIN_ENCODERS)} "
                    "or give a local folder holding a transformers encoder"
                )
            self.tokenizer = ByT5Tokenizer()
            config = T5Config(vocab_size=len(self.tokenizer), **BUILTIN_ENCODERS[name_or_path])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = T5EncoderModel(config)
            self.from_pretrained = False
        else:
            try:
                config = AutoConfig.from_pretrained(name_or_path)
                self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            except OSError as error:
                raise ValueError(
                    f"text_encoder {name_or_path!r}: no transformers model found there ({error}); give a local folder "
                    "with config.json, weights and tokenizer files, or a builtin: name"
                ) from error
            model_class = T5EncoderModel if config.model_type in ("t5", "mt5", "umt5") else AutoModel
            self.model = model_class.from_pretrained(name_or_path)
            self.from_pretrained = True
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def dim(self) -> int:
        """Width of the token embeddings (must equal the UNet's cross_attention_dim)."""
        config = self.model.config
        return getattr(config, "d_model", None) or config.hidden_size

    def train(self, mode: bool = True) -> TextEncoder:
        # Frozen (paper Fig 3): dropout stays off even while the rest of the model trains.
        return super().train(False)

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodes texts.

        Returns:
            embeddings (B, L, D) and mask (B, L) bool, True for real tokens. L = max_length.
        """
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return hidden, tokens.attention_mask.bool()
