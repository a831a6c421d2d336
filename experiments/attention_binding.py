r"""Attention binding: which words does the text cross-attention read, and does each object read its own colour?

`experiments/binding.py` shows *that* two-object captions fail (both objects in one mixed colour); this looks
inside the model for *where*. For unseen two-object text-to-image examples, each target is noised to x_t (a few
timesteps) and denoised once, recording the attention of every text cross-attention of the UNet's lowest-resolution
attention stage (the 8×8 stage of the `demo` presets: down, mid, up; heads and layers averaged). Two tables:

- binding: each object's cells (its silhouette, pooled to that grid) on the tokens of its own colour word against
  the other object's, own / (own + other). 0.5: the colour words are read alike everywhere; 1: each object reads
  its own colour;
- reads: the attention of all cells on each kind of word (colour, shape, pattern, size, position, background)
  over that kind's share of the text's tokens. 1: read as much as any token; below 1: the cross-attention
  leaves that kind to another path (the pooled text embedding, for `demo_pooled`).

    python -m experiments.attention_binding --ckpt base=checkpoints/world-base-32 --n 40

Means with 95% bootstrap intervals (over objects, or examples). A word's tokens are found by tokenizing the text
up to it, so byte-, word- and word-piece tokenizers all work. The tokens are the ones the UNet reads: behind a
`text_refiner`, a position may carry other words too, so both tables then say where the attention goes, not
which words it gets.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torchvision.transforms.v2 import functional as TF

from tasks.text_to_image import TextToImage
from tasks.world import POSITION_PHRASES, SceneObject, silhouettes
from zoo.diffusion.schedule import q_sample
from zoo.eval.bootstrap import mean_interval
from zoo.eval.report import with_interval
from zoo.models.text import TextEncoder


def word_span(encoder: TextEncoder, text: str, word: str) -> range:
    """The token positions of the first `word` in `text`, as the encoder tokenizes the whole text (the tokens of the
    text up to the word, then through it; a space token before it is not the word's)."""
    found = re.search(rf"\b{re.escape(word)}\b", text)  # a whole word: "red" is not the end of "checkered"
    if found is None:
        raise ValueError(f"{word!r} is not a word of {text!r}")
    start = found.start()
    tokenizer = encoder.tokenizer
    prepared = encoder.prepare(text)
    full = tokenizer(prepared)["input_ids"]
    bare = tokenizer(prepared, add_special_tokens=False)["input_ids"]
    lead = next(i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare)
    before = len(tokenizer(encoder.prepare(text[:start].rstrip()), add_special_tokens=False)["input_ids"])
    through = len(tokenizer(encoder.prepare(text[: start + len(word)]), add_special_tokens=False)["input_ids"])
    while before < through and not tokenizer.decode([bare[before]]).strip():  # a byte-level tokenizer's space
        before += 1
    return range(lead + before, lead + through)


class AttentionRecorder:
    """Forward hooks on the text cross-attentions of the lowest-resolution attention stage; `probs` collects each
    call's attention (B, cells, L), heads averaged, recomputed from the layer's own projections."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.probs: list[torch.Tensor] = []
        self.mask: torch.Tensor | None = None
        self.handles = [
            attention.register_forward_hook(self._record, with_kwargs=True)
            for _, attention in model.context_stage_attentions()
        ]

    def _record(self, attention: Attention, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]  # (B, cells, C)
        b, cells, _ = hidden.shape
        q = attention.to_q(hidden).view(b, cells, attention.heads, -1).transpose(1, 2)  # (B, h, cells, d)
        k = attention.to_k(kwargs["encoder_hidden_states"])
        k = k.view(b, k.shape[1], attention.heads, -1).transpose(1, 2)  # (B, h, L, d)
        logits = (q @ k.transpose(-1, -2)) * attention.scale  # (B, h, cells, L)
        logits = logits.masked_fill(~self.mask[:, None, None, :], float("-inf"))
        self.probs.append(logits.softmax(-1).mean(1))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


WORD_KINDS = ("colour", "shape", "pattern", "size", "position", "background")


def scene_words(scene: dict) -> dict[str, list[str]]:
    """{kind: the caption's words of that kind}, from an example's `meta["scene"]` (positions by their last word)."""
    objects = [SceneObject(**o) for o in scene["objects"]]
    words = {kind: [getattr(o, kind) for o in objects] for kind in ("colour", "shape", "pattern", "size")}
    words["position"] = [POSITION_PHRASES[o.position].split()[-1] for o in objects]
    words["background"] = [scene["background"]]
    return words


@dataclass
class Reading:
    """What the cross-attention read, per timestep: `binding` — own / (own + other) colour-word attention of each
    object's cells; `reads` — per word kind, each example's attention on that kind's words over their share of the
    text's tokens (1: read as much as any token; 0: ignored)."""

    binding: dict[int, list[float]] = field(default_factory=dict)
    reads: dict[int, dict[str, list[float]]] = field(default_factory=dict)


@torch.no_grad()
def attention_binding(module, n: int, timesteps: Sequence[int], seed: int = 0) -> Reading:
    """What the text cross-attention reads on the first `n` two-object examples of the unseen text-to-image set."""
    task = TextToImage(num_examples=20 * n, seed=seed, image_size=module.hparams.image_size, split="eval")
    recorder, generator = AttentionRecorder(module.model), torch.Generator().manual_seed(seed)
    reading = Reading({t: [] for t in timesteps}, {t: {kind: [] for kind in WORD_KINDS} for t in timesteps})
    seen = 0
    try:
        for index in range(len(task)):
            instruction = task[index]
            objects = [SceneObject(**o) for o in instruction.meta["scene"]["objects"]]
            if len(objects) != 2:
                continue
            # 1. each word's tokens, the text, the target
            spans = {
                kind: [list(word_span(module.text_encoder, instruction.text, word)) for word in words]
                for kind, words in scene_words(instruction.meta["scene"]).items()
            }
            text, mask = module.text_encoder([instruction.text])  # (1, L, D), (1, L)
            x0 = instruction.target[None]  # (1, 3, H, W) in [-1, 1]
            for t in timesteps:
                # 2. one denoising pass at t, recording the attention: (cells, L)
                recorder.probs, recorder.mask = [], mask
                step = torch.tensor([t])
                x_t = q_sample(module.scheduler, x0, step, torch.randn(x0.shape, generator=generator))
                module.model(x_t, step, text, mask)
                probs = torch.stack(recorder.probs).mean(0)[0]
                side = int(probs.shape[0] ** 0.5)
                # 3. each object's cells on its own colour word and on the other's
                colour = spans["colour"]
                for own, obj in enumerate(objects):
                    silhouette = TF.to_dtype(TF.to_image(silhouettes([obj], x0.shape[-1])), torch.float32, scale=True)
                    cells = F.adaptive_avg_pool2d(silhouette, side).flatten() > 0.25  # (cells,)
                    mass = [probs[cells][:, colour[i]].sum(-1).mean() for i in (own, 1 - own)]
                    reading.binding[t].append((mass[0] / (mass[0] + mass[1])).item())
                # 4. every cell on each kind of word, against that kind's share of the tokens
                tokens = int(mask.sum())
                for kind, kind_spans in spans.items():
                    positions = sorted({p for span in kind_spans for p in span})
                    share = len(positions) / tokens
                    reading.reads[t][kind].append((probs[:, positions].sum(-1).mean() / share).item())
            seen += 1
            if seen == n:
                break
    finally:
        recorder.remove()
    return reading


def main(argv: Sequence[str] | None = None) -> int:
    from zoo.eval.evaluate import load_model, parse_checkpoints

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", action="append", required=True, help="LABEL=PATH: a checkpoint or pipeline folder")
    parser.add_argument("--n", type=int, default=40, help="two-object examples (default 40)")
    parser.add_argument("--t", type=int, nargs="+", default=[200, 500, 800], help="timesteps (default 200 500 800)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    binding = ["| model | t | binding own / (own + other) | objects above 0.5 |", "|---|---|---|---|"]
    reads = [f"| model | t | {' | '.join(WORD_KINDS)} |", "|---|---|" + "---|" * len(WORD_KINDS)]
    try:
        checkpoints = parse_checkpoints(args.ckpt)
    except ValueError as error:
        parser.error(str(error))
    for label, path in checkpoints.items():
        module = load_model(Path(path)).eval()
        reading = attention_binding(module, args.n, args.t, args.seed)
        for t, values in reading.binding.items():
            above = [float(v > 0.5) for v in values]
            cells = [with_interval(sum(v) / len(v), mean_interval([v])) for v in (values, above)]
            binding.append(f"| {label} | {t} | {cells[0]} | {cells[1]} |")
            cells = [with_interval(sum(v) / len(v), mean_interval([v])) for v in reading.reads[t].values()]
            reads.append(f"| {label} | {t} | {' | '.join(cells)} |")
    print("\n".join(binding))
    print("\nAttention on each kind of word over its share of the tokens (1: as much as any token):\n")
    print("\n".join(reads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
