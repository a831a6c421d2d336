"""InstructUNet: a diffusers `UNet2DConditionModel` that also reads a multimodal context.

Paper (arXiv 2401.01952 §2.3, App. A.2.1): each context (marker + text, image) pair is encoded by the backbone's own
down-sampling stack — the same weights, with the pair's text in its cross-attention ("nested encoding") — and the
final-layer features become keys/values of *new* cross-attention layers in the lowest-resolution attention stage
(Table 5: DBlock-3 / UBlock-3, plus the bottleneck). Everything else is the unmodified text-to-image UNet.

How the new layers attach: one `ContextCrossAttention` per existing text cross-attention module in that stage, added
to that module's output through a forward hook. The diffusers forward pass, its attention processors and its
weights stay untouched, so any `UNet2DConditionModel` (DeepFloyd IF's included) can be the backbone, and a
pretrained one loads with only the new layers missing. Their output projections start at zero, so before training
the model *is* the text-to-image backbone (tested to 1e-6).

Gradients (`context_grad`): the paper trains end to end (§2.3: "optimized end-to-end"), so by default the loss
reaches the shared down stack through the context path too. `"no_grad"` runs the context pass under `torch.no_grad()`:
the down blocks then learn only from the denoising path, and the context pass keeps no activations for backward
(less memory with many context images).

The context reaches the hooks through `self._context`, set by `forward` and cleared when it returns. The payload's
token mask reaches a pooled text embedding (`addition_embed_type="text"`, Imagen/IF) the same way, so the pooling
reads real tokens only (`MaskedAttentionPooling`).

Gradient checkpointing (`enable_gradient_checkpointing`): diffusers' own, over the denoising pass and the context
pass alike (both run the same down blocks). The blocks are recomputed during backward, after both passes have
returned, so a hook reading `self._context` then would see whichever pass ran last (the context pass reads no
context; the denoising pass does). The checkpoint function (`_CheckpointWithContext`) therefore records the context
and text mask each segment was first run with and puts them back while it is recomputed. A context layer inside a
diffusers transformer block is recomputed with that block; one beside an attention diffusers does not checkpoint
(IF's and the paper's `SimpleCrossAttn*` blocks) is checkpointed on its own by its hook.

Positions (`context_positions`, off by default as in the paper): cross-attention is blind to where a token sits, so
"the output at (i, j) follows the reference at (i, j)" — what control tasks ask — must be learned from the weak
position signal that convolution padding leaves in the features. With it on, a fixed 2-D sine-cosine code of each
token's normalised grid position is added to the queries' and the context keys' inputs (not the values), the same
code for the same place at any resolution, so attending to the same place is a simple function to learn. No
parameters are added (checkpoints are unchanged), and the zero-initialised output keeps the layer a no-op at start.

Normalised tokens (`context_norm`, off by default as in the paper): the context tokens are the down stack's raw
features (std ~7.5, norms up to ~240 on the shipped base), unlike the layer-normed text tokens the text
cross-attention reads; a few updates of the key/query projections then make the softmax one-hot, and its gradient
vanishes (docs/learning.md, lever 7). With it on, each context layer layer-normalises the tokens before its keys
and values (new weights, starting as the identity), which also puts the grid code of `context_positions` on the
tokens' scale instead of drowning it.

Pooled context (`context_pooled`, off by default as in the paper): `ContextPooling` adds a projection of the pooled
context tokens to the timestep embedding, the way Imagen adds the pooled text, so the context also reaches every
ResNet block of every resolution. Measured with a copy task ("Render [ref#1]", target = reference; docs/learning.md,
lever 8), normalised tokens with positions and the pooled path each carry several times more of the reference
than the paper's path alone, and together the most.

Sampling cost: `generate` encodes the context once per call, and each context layer projects the (fixed) context
tokens to keys and values once per call too (`ContextTokens.projected`, filled only when no gradient is recorded);
every step then pays only the queries, the attention and the output projection.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import AttentionPooling
from torch import nn
from torch.utils.checkpoint import checkpoint

from zoo.models.text_refiner import TextRefiner

POOLED = "pooled"  # the key of `ContextPooling` among the context layers (`context_pooled`)
REFINER = "text_refiner"  # the key of `TextRefiner` among them (`text_refiner`)


def grid_code(n: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n, dim) 2-D sine-cosine code of the cells of a square grid of n cells, by their normalised centres in [0, 1].

    A quarter of the channels each for sin/cos of the row and of the column, at frequencies π·16^(k/(q−1)); spare
    channels are zero. Normalised coordinates give the same place the same code at 8×8 and at 16×16.
    """
    side = math.isqrt(n)
    assert side * side == n, f"context positions need square grids, got {n} cells"
    quarter = dim // 4
    index = torch.arange(n, device=device)
    rows, cols = ((index // side + 0.5) / side), ((index % side + 0.5) / side)  # (n,), (n,)
    freqs = math.pi * 16 ** (torch.arange(quarter, device=device) / max(quarter - 1, 1))  # (q,)
    angles = [rows[:, None] * freqs, cols[:, None] * freqs]  # 2 × (n, q)
    code = torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1)  # (n, 4q)
    return F.pad(code, (0, dim - 4 * quarter)).to(dtype)


@dataclass(eq=False)
class ContextTokens:
    """Encoded context: tokens (B, N, C_ctx) with mask (B, N) bool (False = padding or dropped context); N is
    items × `cells` (each item's feature map, flattened row by row)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    cells: int = 0
    # Each context layer's keys and values of these tokens (the pooled layer's embedding), kept when no gradient is
    # recorded (sampling): the tokens are fixed for a whole `generate` call, so each layer projects them once, not at
    # every step.
    projected: dict[nn.Module, tuple | torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def projection(self, layer: nn.Module, project: Callable[[], tuple | torch.Tensor]) -> tuple | torch.Tensor:
        """`layer`'s projection of these tokens: `project()`, kept in `projected` when no gradient is recorded."""
        if layer in self.projected:
            return self.projected[layer]
        projected = project()
        if not torch.is_grad_enabled():
            self.projected[layer] = projected
        return projected

    @staticmethod
    def cat(parts: list[ContextTokens]) -> ContextTokens:
        """Concatenates along the batch, padding token counts (used to batch guided and unguided branches)."""
        n = max(p.tokens.shape[1] for p in parts)
        tokens = [F.pad(p.tokens, (0, 0, 0, n - p.tokens.shape[1])) for p in parts]
        masks = [F.pad(p.mask, (0, n - p.mask.shape[1])) for p in parts]
        return ContextTokens(torch.cat(tokens), torch.cat(masks), max(p.cells for p in parts))


class ContextCrossAttention(nn.Module):
    """The new layer: queries from UNet features, keys/values from context tokens; output projection zero-init.

    Args:
        query_dim: channels of the UNet features at this layer.
        context_dim: channels of the context tokens (the down stack's last width).
        heads, dim_head: attention shape (copied from the text cross-attention it sits beside).
        positions: add the grid code (`grid_code`) to the queries' and the keys' inputs (module docstring).
        normalize: layer-normalise the context tokens before their keys and values (module docstring).
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int,
        heads: int,
        dim_head: int,
        positions: bool = False,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.positions = positions
        self.norm = nn.LayerNorm(query_dim)
        self.context_norm = nn.LayerNorm(context_dim) if normalize else None
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)
        # Zero-init on purpose: the layer adds exactly nothing until it learns to, so training starts from the
        # pretrained text-to-image model (paper §2.3 adds layers to a pretrained Imagen).
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, context: ContextTokens) -> torch.Tensor:
        """(B, N, C) query tokens → what the context adds to them, (B, N, C); zero for rows without context."""
        rows, k, v, mask = self.keys_values(context)
        if rows is None:
            return self.attend(x, k, v, mask)
        # Rows without context (dropped in training; guidance's unconditional branch) add nothing: skip their
        # attention instead of computing and zeroing it.
        out = torch.zeros_like(x)
        if rows.numel() > 0:
            out = out.index_put((rows,), self.attend(x[rows], k, v, mask))
        return out

    def keys_values(
        self, context: ContextTokens
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows that have context (None: all rows) and their keys, values (R, h, L, d) and token mask (R, L)."""
        return context.projection(self, lambda: self._keys_values(context))

    def _keys_values(
        self, context: ContextTokens
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        has_context = context.mask.any(dim=1)  # (B,)
        rows = None if has_context.all() else has_context.nonzero().squeeze(1)
        tokens, mask = (context.tokens, context.mask) if rows is None else (context.tokens[rows], context.mask[rows])
        r, length, width = tokens.shape
        if self.context_norm is not None:
            tokens = self.context_norm(tokens)
        keyed = tokens
        if self.positions and length > 0:  # each item's cells get their grid code: (L, C_ctx), repeated per item
            code = grid_code(context.cells, width, tokens.device, tokens.dtype).repeat(length // context.cells, 1)
            keyed = tokens + code
        k = self.to_k(keyed).view(r, length, self.heads, -1).transpose(1, 2)  # (R, h, L, d)
        v = self.to_v(tokens).view(r, length, self.heads, -1).transpose(1, 2)  # (R, h, L, d)
        return rows, k, v, mask

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention of x (R, N, C) over keys/values (R, h, L, d) where mask (R, L) is True (≥ 1 True per row)."""
        r, n, width = x.shape
        queries = self.norm(x)
        if self.positions:
            queries = queries + grid_code(n, width, x.device, x.dtype)
        q = self.to_q(queries).view(r, n, self.heads, -1).transpose(1, 2)  # (R, h, N, d)
        # No mask when every token is real (the common case): SDPA then picks its fused kernels.
        attn_mask = None if mask.all() else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (R, h, N, d)
        return self.to_out(out.transpose(1, 2).reshape(r, n, -1))  # (R, N, C)


class ContextPooling(nn.Module):
    """A global read of the context: pooled tokens added to the timestep embedding (`context_pooled`; not in the
    paper). The pooled text embedding (Imagen/IF) is the path that learned backgrounds fastest (docs/learning.md,
    lever 4); this gives the context the same path into every ResNet block.

    Tokens are layer-normalised (the down stack's raw features have std ~7.5), then their masked mean and masked
    max (the max keeps a small object's features that a mean over a background would wash out) are projected to
    the timestep embedding's width by a zero-initialised linear layer, so the model starts as the backbone.
    """

    def __init__(self, context_dim: int, embedding_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(context_dim)
        self.proj = nn.Linear(2 * context_dim, embedding_dim)
        nn.init.zeros_(self.proj.weight)  # zero-init on purpose: a no-op until it learns (see the class docstring)
        nn.init.zeros_(self.proj.bias)

    def forward(self, context: ContextTokens) -> torch.Tensor:
        """(B, N, C) tokens with mask (B, N) → (B, embedding_dim); zero for rows without context."""
        tokens = self.norm(context.tokens)
        real = context.mask[..., None]  # (B, N, 1)
        count = real.sum(1).clamp(min=1)  # (B, 1)
        mean = (tokens * real).sum(1) / count  # (B, C)
        top = tokens.masked_fill(~real, float("-inf")).amax(1) if tokens.shape[1] else mean  # (B, C)
        has_context = context.mask.any(1, keepdim=True)  # (B, 1)
        pooled = torch.cat([mean, top.where(has_context, torch.zeros_like(top))], dim=1)  # (B, 2C)
        return self.proj(pooled) * has_context


class _PooledContextHook:
    """Forward hook on the backbone's `time_embedding`: adds the pooled context (`ContextPooling`) to it. A class for
    the same reason as `_ContextHook`."""

    def __init__(self, owner: InstructUNet) -> None:
        self.owner = owner

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        context = self.owner._context
        if context is None or context.tokens.shape[1] == 0:
            return output
        pool = self.owner.context_layers[POOLED]
        pooled = context.projection(pool, lambda: pool(context))  # (B, embedding_dim)
        return output + pooled.to(output.dtype)


class _ContextHook:
    """Forward hook on a text cross-attention: adds its context layer's output to the attention's output.

    A class rather than a closure, so that `copy.deepcopy` (Lightning's EMA keeps a deep copy) and pickling map the
    hook onto the copied model instead of leaving it pointed at the original.
    """

    def __init__(self, owner: InstructUNet, key: str, recomputed_with_block: bool) -> None:
        self.owner, self.key = owner, key
        # Whether diffusers' gradient checkpointing already recomputes the attention this hook sits on (inside a
        # transformer block); otherwise the hook checkpoints the context layer itself.
        self.recomputed_with_block = recomputed_with_block

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        context = self.owner._context
        if context is None or context.tokens.shape[1] == 0:  # no context at all in this batch: nothing to add
            return output
        layer = self.owner.context_layers[self.key]
        if self.owner.gradient_checkpointing and not self.recomputed_with_block and torch.is_grad_enabled():
            layer = partial(checkpoint, layer, use_reentrant=False)
        x = args[0]
        if x.ndim == 4:  # attention blocks that take feature maps (e.g. DeepFloyd IF): (B, C, H, W) → (B, HW, C)
            b, c, h, w = x.shape
            return output + layer(x.flatten(2).transpose(1, 2), context).transpose(1, 2).reshape(b, c, h, w)
        return output + layer(x, context)  # (B, N, C)


class _CheckpointWithContext:
    """diffusers' `gradient_checkpointing_func` for an `InstructUNet`'s backbone: `torch.utils.checkpoint`
    (non-reentrant, as diffusers' default) that recomputes a segment with the context and text mask it first ran with.

    A class, like `_ContextHook`, so that deep copies and pickles follow the copied owner.
    """

    def __init__(self, owner: InstructUNet) -> None:
        self.owner = owner

    def __call__(self, module: nn.Module, *args: object) -> object:
        owner = self.owner
        state = owner._context, owner._text_mask

        def run(*inputs: object) -> object:
            outer = owner._context, owner._text_mask
            owner._context, owner._text_mask = state
            try:
                return module(*inputs)
            finally:
                owner._context, owner._text_mask = outer

        return checkpoint(run, *args, use_reentrant=False)


class MaskedAttentionPooling(AttentionPooling):
    """diffusers' `AttentionPooling` (DeepFloyd IF's, inside `TextTimeEmbedding`) with the text's padding left out.

    diffusers' pooling takes no mask: padding tokens enter both the mean that seeds the class token and the
    attention, so a text's pooled embedding changed with `max_length` (measured: a different vector at 32 and 48
    tokens). Here the mean and the attention read real tokens only (as Imagen's masked pooling). Same parameters
    and state-dict keys as the module it replaces, so diffusers and IF weights load unchanged. The mask arrives
    through the owning `InstructUNet` (set for the duration of a forward, like the context).
    """

    def __init__(self, pool: AttentionPooling, owner: InstructUNet) -> None:
        width = pool.positional_embedding.shape[-1]
        with torch.random.fork_rng(devices=[]):  # the parent draws a positional embedding that is overwritten next
            super().__init__(pool.num_heads, width, dtype=pool.dtype)
        self.load_state_dict(pool.state_dict())
        self.to(pool.positional_embedding.device, pool.positional_embedding.dtype)
        object.__setattr__(self, "owner", owner)  # not a submodule: the owner holds this module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.owner._text_mask
        if mask is None:
            return super().forward(x)
        b, length, width = x.shape
        real = mask.to(x.dtype)[..., None]  # (B, L, 1)
        mean = (x * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1)
        x = torch.cat([mean + self.positional_embedding.to(x.dtype), x], dim=1)  # (B, 1 + L, W)
        h, d = self.num_heads, self.dim_per_head
        q = self.q_proj(x[:, :1]).view(b, 1, h, d).transpose(1, 2)  # (B, h, 1, d)
        k = self.k_proj(x).view(b, 1 + length, h, d).transpose(1, 2)  # (B, h, 1 + L, d)
        v = self.v_proj(x).view(b, 1 + length, h, d).transpose(1, 2)
        keep = torch.cat([mask.new_ones(b, 1), mask], dim=1)[:, None, None, :]  # the class token and real tokens
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, h, 1, d)
        return out.transpose(1, 2).reshape(b, width)


class InstructUNet(nn.Module):
    """A `UNet2DConditionModel` plus context encoding and context cross-attention.

    Args:
        unet: the backbone (taken as is, never rebuilt or copied).
        context_grad: `end_to_end` (the paper) or `no_grad` (no gradient through the context pass).
        context_positions: give the context layers each token's grid position (module docstring; not in the paper).
        context_norm: layer-normalise the context tokens before each context layer's keys and values (not in the
            paper; the down stack's raw features saturate the attention, docs/learning.md lever 7).
        context_pooled: also add the pooled context to the timestep embedding (`ContextPooling`; not in the paper).
        text_refiner: this many trainable transformer layers over the text tokens before the backbone reads them
            (`TextRefiner`; 0: none, as in the paper). Payload and context texts alike.

    Every layer the backbone lacks (context cross-attention, pooled context, text refiner) sits in `context_layers`,
    each starting as a no-op, so `init_from`, export and LoRA treat them alike as the new layers.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        context_grad: Literal["end_to_end", "no_grad"] = "end_to_end",
        context_positions: bool = False,
        context_norm: bool = False,
        context_pooled: bool = False,
        text_refiner: int = 0,
    ) -> None:
        super().__init__()
        if context_grad not in ("end_to_end", "no_grad"):
            raise ValueError(f"context_grad must be 'end_to_end' or 'no_grad', got {context_grad!r}")
        self.unet = unet
        self.context_grad = context_grad
        self.context_dim = unet.config.block_out_channels[-1]
        self.context_layers = nn.ModuleDict()
        self._context: ContextTokens | None = None
        self._text_mask: torch.Tensor | None = None
        self.gradient_checkpointing = False
        if unet.config.addition_embed_type == "text":  # Imagen/IF's pooled text embedding: pool real tokens only
            unet.add_embedding.pool = MaskedAttentionPooling(unet.add_embedding.pool, self)
        for name, attention in self.context_stage_attentions():
            layer = ContextCrossAttention(
                attention.query_dim,
                self.context_dim,
                attention.heads,
                attention.inner_dim // attention.heads,
                positions=context_positions,
                normalize=context_norm,
            )
            key = name.replace(".", "_")
            self.context_layers[key] = layer
            attention.register_forward_hook(_ContextHook(self, key, ".transformer_blocks." in f".{name}."))
        if context_pooled:  # kept with the context layers, so `init_from`, export and LoRA treat it as one of them
            self.context_layers[POOLED] = ContextPooling(self.context_dim, unet.time_embedding.linear_2.out_features)
            unet.time_embedding.register_forward_hook(_PooledContextHook(self))
        if text_refiner:
            # the encoder's width, before any `encoder_hid_dim` projection
            width = unet.config.encoder_hid_dim or unet.config.cross_attention_dim
            self.context_layers[REFINER] = TextRefiner(width, text_refiner)
        if not any(key not in (POOLED, REFINER) for key in self.context_layers):
            raise ValueError(
                "the UNet has no text cross-attention at its lowest-resolution stage, so there is nowhere to read the "
                f"context; down_block_types={unet.config.down_block_types}"
            )

    def context_stage_attentions(self) -> list[tuple[str, Attention]]:
        """Text cross-attention modules of the lowest-resolution attention stage: that down block, mid, its up block."""
        down_with_attention = [
            i for i, block in enumerate(self.unet.down_blocks) if getattr(block, "has_cross_attention", False)
        ]
        if not down_with_attention:
            return []
        deepest = down_with_attention[-1]
        prefixes = [f"down_blocks.{deepest}.", "mid_block.", f"up_blocks.{len(self.unet.up_blocks) - 1 - deepest}."]
        return [
            (name, module)
            for name, module in self.unet.named_modules()
            if isinstance(module, Attention) and module.is_cross_attention and name.startswith(tuple(prefixes))
        ]

    @property
    def config(self):
        return self.unet.config

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward instead of keeping them: the backbone's blocks (diffusers), in the
        denoising and the context pass, and the context layers (module docstring)."""
        self.unet.enable_gradient_checkpointing(_CheckpointWithContext(self))
        self.gradient_checkpointing = True

    def refine(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The text tokens the backbone reads: through the `TextRefiner` when there is one. (B, L, D) → (B, L, D)."""
        refiner = self.context_layers[REFINER] if REFINER in self.context_layers else None
        return text if refiner is None else refiner(text, text_mask)

    def encode_context(
        self,
        images: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        item_mask: torch.Tensor,
    ) -> ContextTokens:
        """Nested encoding of context items by the backbone's own down stack (shared weights, clean images).

        Args:
            images: (B, K, 3, H, W) context images in [-1, 1].
            text: (B, K, L, D) embeddings of each item's (marker + text); text_mask (B, K, L) bool.
            item_mask: (B, K) bool, True for real items. Padded items are never encoded.

        Returns:
            ContextTokens with tokens (B, K*h*w, C_ctx) and mask (B, K*h*w).
        """
        b, k = item_mask.shape
        real = item_mask.flatten()  # (B*K,)
        # 1. keep only real items: (R, 3, H, W), (R, L, D)
        x = images.flatten(0, 1)[real]
        hidden = text.flatten(0, 1)[real]
        hidden_mask = text_mask.flatten(0, 1)[real]
        if x.shape[0] == 0:
            empty = torch.zeros(b, 0, self.context_dim, device=images.device, dtype=images.dtype)
            return ContextTokens(empty, torch.zeros(b, 0, dtype=torch.bool, device=images.device))
        with torch.no_grad() if self.context_grad == "no_grad" else nullcontext():
            features = self.down_features(x, hidden, hidden_mask)  # (R, C_ctx, h, w)
        r, c, h, w = features.shape
        # 2. scatter back to (B*K, h*w, C_ctx) with zeros for padded items
        tokens = features.new_zeros(b * k, h * w, c)
        tokens[real] = features.flatten(2).transpose(1, 2)
        mask = item_mask.flatten()[:, None].expand(b * k, h * w)
        return ContextTokens(tokens.view(b, k * h * w, c), mask.reshape(b, k * h * w), h * w)

    def down_features(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The down-sampling stack alone, at timestep 0 (clean input), as in the first half of the UNet forward.

        Args:
            x: (N, 3, H, W); text: (N, L, D); text_mask: (N, L) bool.
        Returns:
            the last down block's output (N, C_ctx, h, w).
        """
        unet = self.unet
        text = self.refine(text, text_mask)
        self._context = None  # each item is encoded alone: no context is read in this pass (nor pooled into its time)
        timestep = torch.zeros(x.shape[0], device=x.device, dtype=torch.long)
        # 1. time (and IF-style text addition embedding)
        emb = unet.time_embedding(unet.get_time_embed(sample=x, timestep=timestep))
        if (
            unet.class_embedding is not None
        ):  # a super-resolution UNet's noise-augmentation level: 0, the image is clean
            class_emb = unet.get_class_embed(sample=x, class_labels=timestep)
            emb = torch.cat([emb, class_emb], dim=-1) if unet.config.class_embeddings_concat else emb + class_emb
        self._text_mask = text_mask
        try:
            aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=text, added_cond_kwargs={})
        finally:
            self._text_mask = None
        emb = emb + aug if aug is not None else emb
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        text = unet.process_encoder_hidden_states(encoder_hidden_states=text, added_cond_kwargs={})
        bias = ((1 - text_mask.to(x.dtype)) * -10000.0).unsqueeze(1)  # (N, 1, L), as the UNet forward converts it
        # 2. pre-process
        h = unet.conv_in(x)
        # 3. down: each item attends to its own text (nested encoding)
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=text, encoder_attention_mask=bias)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        return h

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        context: ContextTokens | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The denoiser: (x_t, t, text, context) → model output (v for this project).

        Args:
            sample: (B, C, H, W) noisy images; timestep: (B,) or scalar.
            text: (B, L, D) payload embeddings; text_mask (B, L) bool.
            context: encoded context for this batch, or None for text-only.
            class_labels: (B,) for a UNet with a class embedding (a super-resolution UNet's noise-augmentation level).
        """
        text = self.refine(text, text_mask)
        self._context, self._text_mask = context, text_mask
        try:
            return self.unet(
                sample,
                timestep,
                encoder_hidden_states=text,
                encoder_attention_mask=text_mask,
                class_labels=class_labels,
            ).sample
        finally:
            # Cleared, so a later direct call of `self.unet` is the plain backbone (a checkpointed segment recomputed
            # in backward gets its own context back from `_CheckpointWithContext`).
            self._context = self._text_mask = None
