"""The standard metric families, applied to one eval set's generations.

- text_to_image: CLIP score (100 · max(cos, 0), text side needed) and FD/KD between generated and real images.
- subject (DreamBench): image similarity of each generation to its subject's reference images (mean over the
  references), and image-text similarity to the prompt.
- editing (MagicBrush): L1, L2 and image similarity to the ground-truth edit, overall and inside / outside the mask;
  image-text similarity to the instruction.
- control: fidelity to the control, measured on the generation and on the ground-truth image with one annotator
  (the suite's, else Canny for edges): edge F1, depth Pearson correlation, mask IoU.

Similarities carry the feature extractor's name (CLIP-I / DINO only for the real models). A metric that cannot be
computed (no text encoder, no depth annotator) is left out and the reason is returned as a note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from zoo.eval.features import FeatureExtractor
from zoo.eval.fid import frechet_distance, kernel_distance
from zoo.eval.metrics import canny_edges, depth_correlation, edge_f1, l1, l2, mask_iou, masked_errors
from zoo.eval.suite import Annotator, EvalSet


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def _cos(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return (a * b).sum(-1).tolist()


def standard_metrics(
    eval_set: EvalSet,
    images: torch.Tensor,
    extractors: Sequence[FeatureExtractor],
    annotators: dict[str, Annotator] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Set-level metrics (means over examples) for `images` (B, 3, H, W) in [-1, 1]; returns (metrics, notes)."""
    family, instructions = eval_set.family, list(eval_set.instructions)
    metrics: dict[str, float] = {}
    notes: list[str] = []
    if family is None:
        return metrics, notes
    annotators = annotators or {}
    has_targets = all(i.target is not None for i in instructions)
    targets = torch.stack([i.target for i in instructions]) if has_targets else None
    if family in ("editing", "control") and targets is None:
        notes.append(f"{family} metrics need ground-truth images; this set has none")
        return metrics, notes

    for extractor in extractors:
        generated = extractor.encode_image(images)
        if extractor.text_metric is None:
            notes.append(f"no image-text metric with {extractor.name} (no text encoder)")
        else:
            text_sim = _cos(generated, extractor.encode_text([i.text for i in instructions]))
            if family == "text_to_image":
                metrics[f"{extractor.short} score"] = _mean([100 * max(s, 0.0) for s in text_sim])
            else:
                metrics[extractor.text_metric] = _mean(text_sim)
        if family == "text_to_image" and targets is not None:
            if len(images) < 2:
                notes.append("FD/KD need at least 2 images per set")
            else:
                real = extractor.encode_image(targets)
                metrics[f"FD[{extractor.short}]"] = frechet_distance(generated, real)
                metrics[f"KD[{extractor.short}]"] = kernel_distance(generated, real)
        elif family == "subject":
            per_example = []
            for instruction, feature in zip(instructions, generated):
                if instruction.context:
                    refs = extractor.encode_image(torch.stack([c.image for c in instruction.context]))
                    per_example.append(_mean(_cos(feature[None], refs)))
            metrics[extractor.image_metric] = _mean(per_example)
        elif family == "editing":
            metrics[extractor.image_metric] = _mean(_cos(generated, extractor.encode_image(targets)))
            masks = [i.mask for i in instructions]
            if all(m is not None for m in masks):
                inside = torch.stack(masks)  # regions outside are set to 0 (mid-grey) before encoding
                for label, region in (("in mask", inside), ("outside mask", 1 - inside)):
                    a, b = extractor.encode_image(images * region), extractor.encode_image(targets * region)
                    metrics[f"{extractor.image_metric} {label}"] = _mean(_cos(a, b))

    if family == "editing":
        masks = [i.mask for i in instructions]
        if all(m is not None for m in masks):
            rows = [masked_errors(g, t, m) for g, t, m in zip(images, targets, masks)]
            metrics.update({key: _mean([row[key] for row in rows]) for key in rows[0]})
        else:
            metrics["L1"] = _mean([l1(g, t) for g, t in zip(images, targets)])
            metrics["L2"] = _mean([l2(g, t) for g, t in zip(images, targets)])
            notes.append("no masks in this set: L1/L2 over the whole image only")
    elif family == "control":
        kind = eval_set.control
        annotate = annotators.get(kind, canny_edges if kind == "edge" else None)
        if annotate is None:
            notes.append(f"no {kind} annotator in this suite: {kind} fidelity not measured")
        else:
            compare = {"edge": edge_f1, "depth": depth_correlation, "mask": mask_iou}[kind]
            name = {"edge": "edge F1", "depth": "depth corr", "mask": "mask IoU"}[kind]
            if kind == "edge" and "edge" not in annotators:
                notes.append("edge F1 uses Canny (zoo.eval.metrics.CANNY), 1-px tolerance")
            metrics[name] = _mean([compare(annotate(g), annotate(t)) for g, t in zip(images, targets)])
    return metrics, notes
