"""TextRefiner: a few trainable transformer layers over the frozen text encoder's tokens (not in the paper).

Why: the paper's text encoder is a pretrained T5-XXL (§2.1), whose tokens already say which words belong together —
that "yellow" describes the object "on the left". The zoo's built-in encoders are random and frozen, so nothing in
them learns it, and the UNet's cross-attention reads each token on its own: with two objects in a caption, both come
out in one mixed look (docs/learning.md, lever 15). These layers let the text side learn that binding with the
model, as HunyuanVideo's token refiner does over its frozen LLM features.

Each layer is torch's pre-norm `nn.TransformerEncoderLayer` (self-attention with a key-padding mask, then an MLP).
A fixed 1-D sine-cosine code of each token's index rides in the residual stream — cross-attention and a frozen T5's
relative bias say nothing the layers could use about which phrase a word sits in — and is taken out again at the
end. Both residual branches' output projections start at zero on purpose: an untrained refiner is the identity, so
a model with one is exactly the model without it until it learns (tested), and a pretrained backbone loads with the
refiner as a new layer. Padding tokens pass through unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def index_code(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(length, dim) sine-cosine code of token indices (Vaswani et al. 2017, §3.5); an odd last channel is zero."""
    half = dim // 2
    index = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (L, 1)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device) / max(half, 1))  # (half,)
    code = torch.cat([torch.sin(index * freqs), torch.cos(index * freqs)], dim=1)  # (L, 2·half)
    return nn.functional.pad(code, (0, dim - 2 * half)).to(dtype)


class TextRefiner(nn.Module):
    """`layers` pre-norm transformer layers over (B, L, dim) text tokens, starting as the identity.

    Args:
        dim: the text tokens' width (the encoder's, before any `encoder_hid_dim` projection).
        layers: how many transformer layers (≥ 1).
        heads: attention heads; `dim` must be a multiple.
    """

    def __init__(self, dim: int, layers: int, heads: int = 4) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"text_refiner: a refiner needs at least one layer, got {layers}")
        if dim % heads:
            raise ValueError(f"text_refiner: the text width {dim} is not a multiple of {heads} heads")
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        for layer in self.layers:  # zero-init on purpose: the identity until it learns (module docstring)
            for projection in (layer.self_attn.out_proj, layer.linear2):
                nn.init.zeros_(projection.weight)
                nn.init.zeros_(projection.bias)

    def forward(self, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) tokens with (B, L) bool mask → refined tokens, same shape; padding positions unchanged."""
        b, length, dim = text.shape
        mask = mask.bool()
        # 1. token indices into the residual stream: (B, L, dim)
        code = index_code(length, dim, text.device, text.dtype)
        h = text + code
        # 2. self-attention over real tokens; a text with none (dropped for guidance) attends to all, then is reset
        ignore = ~mask & mask.any(dim=1, keepdim=True)  # (B, L)
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=ignore)
        # 3. the code out again; padding as it came
        return torch.where(mask[..., None], h - code, text)
