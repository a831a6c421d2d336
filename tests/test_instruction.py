"""Tests of the instruction schema: validation, image normalisation and collation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.instruction import ContextItem, Instruction, collate_instructions, find_markers, to_image_tensor

S = 8  # image side used here


def img(value: float = 0.5, size: int = S) -> torch.Tensor:
    return torch.full((3, size, size), value)


def item(marker: str = "[ref#1]", text: str | None = None, size: int = S) -> ContextItem:
    return ContextItem(marker, text if text is not None else f"a {marker} image", img(size=size))


# --------------------------------------------------------------------------------------------------- validation
def test_payload_marker_without_context_item_names_the_marker() -> None:
    with pytest.raises(ValueError, match=r"\[ref#2\]"):
        Instruction("Draw [ref#1] in the style of [ref#2]", context=[item("[ref#1]")])
    with pytest.raises(ValueError, match=r"\[ref#1\]"):
        Instruction("Draw a circle in the style of [ref#1]")


def test_unreferenced_context_item_names_its_marker() -> None:
    with pytest.raises(ValueError, match=r"\[ref#3\]") as info:
        Instruction("Draw [ref#1]", context=[item("[ref#1]"), item("[ref#3]")])
    assert "never referenced" in str(info.value)


@pytest.mark.parametrize("bad", ["[ref1]", "[ref#0]", "[ref#x]", "[ref#]", "[REF#1]", "[ref#01]"])
def test_malformed_payload_markers_are_named(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        Instruction(f"Draw a circle in the style of {bad}")
    assert bad in str(info.value)
    with pytest.raises(ValueError) as info:
        find_markers(f"x {bad} y")
    assert bad in str(info.value)


@pytest.mark.parametrize("bad", ["[ref1]", "[ref#0]", "[ref#x]", "ref#1", ""])
def test_malformed_context_marker_is_named(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        ContextItem(bad, "an image", img())
    assert repr(bad) in str(info.value)


def test_malformed_marker_inside_context_text_is_named() -> None:
    with pytest.raises(ValueError, match=r"\[ref1\]"):
        ContextItem("[ref#1]", "a [ref1] style image", img())


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_an_error_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="text"):
        Instruction(text, target=img())


def test_non_binary_mask_is_an_error_naming_the_mask() -> None:
    mask = torch.zeros(1, S, S)
    mask[0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="mask") as info:
        Instruction("Fill the hole", target=img(), mask=mask)
    assert "binary" in str(info.value)
    with pytest.raises(ValueError, match="mask"):
        Instruction("Fill the hole", target=img(), mask=torch.full((1, S, S), 2.0))


def test_binary_masks_are_accepted_in_several_forms() -> None:
    uint8 = torch.zeros(S, S, dtype=torch.uint8)
    uint8[:4] = 255
    for mask in [uint8, uint8.bool(), (uint8 > 0).float()[None], Image.fromarray(uint8.numpy())]:
        stored = Instruction("Fill the hole", target=img(), mask=mask).mask
        assert stored.shape == (1, S, S) and stored.dtype == torch.float32
        assert set(stored.unique().tolist()) == {0.0, 1.0}
        assert stored[0, :4].eq(1).all() and stored[0, 4:].eq(0).all()


def test_mask_size_mismatch_names_the_mask_and_both_sizes() -> None:
    with pytest.raises(ValueError, match="mask") as info:
        Instruction("Fill the hole", target=img(size=S), mask=torch.ones(1, S // 2, S // 2))
    assert str((S // 2, S // 2)) in str(info.value) and str((S, S)) in str(info.value)


@pytest.mark.parametrize("low, high", [(0.0, 1.5), (-0.5, 1.0)])
def test_float_image_outside_unit_range_is_an_error_naming_the_field(low: float, high: float) -> None:
    bad = torch.linspace(low, high, 3 * S * S).view(3, S, S)
    with pytest.raises(ValueError, match="target") as info:
        Instruction("Draw a circle", target=bad)
    assert "[0, 1]" in str(info.value)
    with pytest.raises(ValueError, match=r"\[ref#1\]"):
        ContextItem("[ref#1]", "a style image", bad)


def test_context_text_without_its_marker_gets_it_in_front() -> None:
    assert ContextItem("[ref#2]", "style image", img()).prompt == "[ref#2] style image"
    assert ContextItem("[ref#2]", "a [ref#2] style image", img()).prompt == "a [ref#2] style image"


def test_context_text_naming_another_marker_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\[ref#2\]"):
        ContextItem("[ref#1]", "like [ref#2]", img())


# ------------------------------------------------------------------------------------------ image normalisation
def check_stored(x: torch.Tensor, size: tuple[int, int] = (S, S)) -> None:
    assert x.dtype == torch.float32 and x.shape == (3, *size)
    assert x.min() >= -1 and x.max() <= 1


def test_pil_mode_L_repeats_gray_to_rgb() -> None:
    array = np.arange(S * S, dtype=np.uint8).reshape(S, S) * 3
    x = to_image_tensor(Image.fromarray(array, mode="L"))
    check_stored(x)
    expected = torch.from_numpy(array).float() / 255 * 2 - 1
    for channel in range(3):
        torch.testing.assert_close(x[channel], expected)


def test_pil_mode_RGBA_composites_alpha_on_white() -> None:
    array = np.zeros((S, S, 4), dtype=np.uint8)
    array[..., 0] = 255  # pure red...
    array[:, : S // 2, 3] = 0  # ...fully transparent on the left half
    array[:, S // 2 :, 3] = 255  # ...opaque on the right half
    x = to_image_tensor(Image.fromarray(array, mode="RGBA"))
    check_stored(x)
    assert torch.allclose(x[:, :, : S // 2], torch.ones(3, S, S // 2))  # transparent → white, never black
    assert torch.allclose(x[:, :, S // 2 :], torch.tensor([1.0, -1.0, -1.0])[:, None, None].expand(3, S, S // 2))


def test_pil_mode_RGBA_half_alpha_blends_with_white() -> None:
    array = np.zeros((S, S, 4), dtype=np.uint8)
    array[..., 3] = 128  # black at ~50% opacity → mid gray
    x = to_image_tensor(Image.fromarray(array, mode="RGBA"))
    check_stored(x)
    assert torch.allclose(x, torch.full_like(x, 127 / 255 * 2 - 1), atol=2 / 255)


def test_pil_mode_CMYK() -> None:
    x = to_image_tensor(Image.new("CMYK", (S, S), (0, 0, 0, 0)))  # no ink: white
    check_stored(x)
    assert torch.allclose(x, torch.ones_like(x))
    y = to_image_tensor(Image.new("CMYK", (S, S), (0, 255, 255, 0)))  # magenta + yellow: red
    torch.testing.assert_close(y[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


def test_pil_mode_I16_keeps_contrast() -> None:
    array = np.linspace(0, 65535, S * S).astype(np.uint16).reshape(S, S)
    image = Image.fromarray(array)  # uint16 → mode I;16
    assert image.mode == "I;16"
    x = to_image_tensor(image)
    check_stored(x)
    assert x.min() == -1 and x.max() == 1  # full contrast, not crushed to black
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert (x[0].flatten().diff() >= 0).all()  # monotone in the input


def test_16_bit_images_are_scaled_by_their_range_not_their_maximum() -> None:
    """A 16-bit copy of a dark 8-bit picture (v · 257) is the same picture, not a brighter one."""
    array8 = np.linspace(0, 100, S * S).astype(np.uint8).reshape(S, S)  # dark: its maximum is far below 255
    eight = to_image_tensor(Image.fromarray(array8, mode="L"))
    sixteen = to_image_tensor(Image.fromarray(array8.astype(np.uint16) * 257))
    torch.testing.assert_close(sixteen, eight, atol=1e-6, rtol=0)
    as_int32 = Image.fromarray(array8.astype(np.int32) * 257, mode="I")  # how some readers give 16-bit samples
    torch.testing.assert_close(to_image_tensor(as_int32), eight, atol=1e-6, rtol=0)
    tensor16 = torch.from_numpy(array8.astype(np.uint16) * 257)[None].expand(3, -1, -1).contiguous()
    torch.testing.assert_close(to_image_tensor(tensor16), eight, atol=1e-6, rtol=0)


def test_32_bit_values_beyond_16_bits_are_refused_naming_the_field() -> None:
    image = Image.fromarray(np.full((S, S), 70000, dtype=np.int32), mode="I")
    with pytest.raises(ValueError, match=r"^target: a mode-I image with values in \[70000, 70000\]"):
        to_image_tensor(image, name="target")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_image_tensors_are_refused_naming_the_field(bad: float) -> None:
    t = torch.rand(3, S, S)
    t[1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"^context item \[ref#1\] image: the image holds NaN or infinite values"):
        ContextItem("[ref#1]", "a [ref#1] image", t)


@pytest.mark.parametrize("shape", [(3, 0, 0), (3, 0, S), (1, S, 0)])
def test_empty_image_tensors_are_refused_naming_the_field(shape: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match=r"^target: the image is empty"):
        Instruction("Draw a red circle", target=torch.rand(shape))
    with pytest.raises(ValueError, match=r"^target: the image is empty \(0×0 pixels\)"):
        Instruction("Draw a red circle", target=Image.new("RGB", (0, 0)))


def test_empty_mask_is_refused_naming_the_field() -> None:
    from zoo.instruction import to_mask_tensor

    with pytest.raises(ValueError, match=r"^mask: the mask is empty"):
        to_mask_tensor(torch.zeros(1, 0, 0))


def test_non_square_pil_image_keeps_height_and_width() -> None:
    x = to_image_tensor(Image.new("RGB", (12, 5), (255, 0, 0)))  # PIL size is (W, H)
    check_stored(x, size=(5, 12))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_uint8_tensors(channels: int) -> None:
    t = torch.randint(0, 256, (channels, S, S), dtype=torch.uint8)
    if channels == 4:
        t[3] = 255  # opaque
    x = to_image_tensor(t)
    check_stored(x)
    expected = (t[:3] if channels > 1 else t.expand(3, -1, -1)).float() / 255 * 2 - 1
    torch.testing.assert_close(x, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_float_tensors(dtype: torch.dtype) -> None:
    t = torch.rand(3, S, S).to(dtype)
    x = to_image_tensor(t)
    check_stored(x)
    torch.testing.assert_close(x, t.float() * 2 - 1)


def test_float_rgba_tensor_composites_on_white() -> None:
    t = torch.zeros(4, S, S)  # black, fully transparent
    assert torch.equal(to_image_tensor(t), torch.ones(3, S, S))


def test_instruction_stores_every_image_in_the_one_form() -> None:
    rgba = Image.new("RGBA", (S, S), (0, 0, 255, 255))
    instruction = Instruction(
        "Draw [ref#1]",
        context=[ContextItem("[ref#1]", "[ref#1] toy", Image.new("L", (S, S), 128))],
        target=rgba,
    )
    check_stored(instruction.target)
    check_stored(instruction.context[0].image)


def test_bad_image_shapes_and_types() -> None:
    with pytest.raises(ValueError, match="shape"):
        to_image_tensor(torch.rand(2, S, S))
    with pytest.raises(ValueError, match="shape"):
        to_image_tensor(torch.rand(S, S))
    with pytest.raises(TypeError):
        to_image_tensor(np.zeros((3, S, S)))
    with pytest.raises(TypeError):
        to_image_tensor(torch.zeros(3, S, S, dtype=torch.int32))


# ------------------------------------------------------------------------------------------------ context items
def test_several_context_items_may_share_a_marker() -> None:
    instruction = Instruction(
        "Draw a large [ref#1] toy on the left",
        context=[item("[ref#1]", "[ref#1] toy"), item("[ref#1]", "[ref#1] toy")],
        target=img(),
    )
    assert len(instruction.context) == 2
    assert instruction.markers == ["[ref#1]"]


def test_markers_are_listed_once_in_order() -> None:
    assert find_markers("[ref#2] then [ref#1] and [ref#2] again") == ["[ref#2]", "[ref#1]"]
    assert find_markers("no markers here [not a ref]") == []


# ---------------------------------------------------------------------------------------------------- collation
def with_items(n: int, size: int = S, task: str = "t") -> Instruction:
    if n == 0:
        return Instruction("Draw a circle", target=img(size=size), task=task)
    markers = " ".join(f"[ref#{i}]" for i in range(1, n + 1))
    context = [ContextItem(f"[ref#{i}]", f"image {i}", img(i / 10, size)) for i in range(1, n + 1)]
    return Instruction(f"Combine {markers}", context=context, target=img(size=size), task=task)


def test_collate_pads_to_the_largest_context_and_never_truncates() -> None:
    batch = collate_instructions([with_items(0), with_items(1), with_items(3)])
    assert len(batch) == 3
    assert batch.context_images.shape == (3, 3, 3, S, S)
    assert batch.context_mask.dtype == torch.bool
    assert batch.context_mask.tolist() == [[False, False, False], [True, False, False], [True, True, True]]
    assert batch.texts == ["Draw a circle", "Combine [ref#1]", "Combine [ref#1] [ref#2] [ref#3]"]
    assert batch.context_texts == [
        ["", "", ""],
        ["[ref#1] image 1", "", ""],
        ["[ref#1] image 1", "[ref#2] image 2", "[ref#3] image 3"],
    ]
    assert batch.tasks == ["t", "t", "t"]
    # real items keep their pixels, padding is zeros
    for j in range(3):
        torch.testing.assert_close(batch.context_images[2, j], torch.full((3, S, S), (j + 1) / 10 * 2 - 1))
    assert batch.context_images[0].eq(0).all() and batch.context_images[1, 1:].eq(0).all()
    assert batch.target.shape == (3, 3, S, S)
    assert batch.mask is None


def test_collate_keeps_many_items_of_one_instruction() -> None:
    batch = collate_instructions([with_items(7), with_items(2)])
    assert batch.context_mask.sum(dim=1).tolist() == [7, 2]


def test_collate_fills_missing_masks_with_ones() -> None:
    masked = Instruction("Fill the hole", target=img(), mask=torch.zeros(1, S, S))
    batch = collate_instructions([with_items(0), masked])
    assert batch.mask.shape == (2, 1, S, S)
    assert batch.mask[0].eq(1).all() and batch.mask[1].eq(0).all()


def test_collate_text_only_batch_has_zero_context_slots() -> None:
    batch = collate_instructions([with_items(0), with_items(0)])
    assert batch.context_images.shape == (2, 0, 3, S, S)
    assert batch.context_mask.shape == (2, 0)
    assert batch.context_texts == [[], []]


def test_collate_without_targets_uses_image_size() -> None:
    batch = collate_instructions([Instruction("Draw a circle")], image_size=(S, S))
    assert batch.target is None and batch.context_images.shape == (1, 0, 3, S, S)
    with pytest.raises(ValueError, match="image_size"):
        collate_instructions([Instruction("Draw a circle")])


def test_collate_size_mismatch_names_the_instruction_and_the_item() -> None:
    odd = Instruction("Draw [ref#1] like [ref#2]", context=[item("[ref#1]"), item("[ref#2]", size=S * 2)], target=img())
    with pytest.raises(ValueError) as info:
        collate_instructions([with_items(1), odd])
    message = str(info.value)
    assert "batch[1]" in message and "[ref#2]" in message and str((S * 2, S * 2)) in message
    with pytest.raises(ValueError, match="target"):
        collate_instructions([with_items(0), with_items(0, size=S * 2)])
    with pytest.raises(ValueError, match="batch\\[0\\]"):
        collate_instructions([with_items(0)], image_size=(S * 2, S * 2))


def test_collate_mixed_targets_and_empty_batch_are_errors() -> None:
    with pytest.raises(ValueError, match="target"):
        collate_instructions([with_items(0), Instruction("Draw a circle")])
    with pytest.raises(ValueError, match="empty"):
        collate_instructions([])


def test_batch_to_keeps_everything() -> None:
    batch = collate_instructions([with_items(0), with_items(2)]).to("cpu")
    assert batch.context_mask.tolist() == [[False, False], [True, True]]
    assert batch.texts[1] == "Combine [ref#1] [ref#2]"


# ------------------------------------------------------------------------------------------------------ resizing
def test_resized_scales_every_image_in_place_of_minus_one_to_one() -> None:
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 2 * S, 2 * S, generator=g) > 0.5).float()
    original = Instruction(
        "Draw [ref#1] again",
        context=[ContextItem("[ref#1]", "a [ref#1] toy", torch.rand(3, 4 * S, 4 * S, generator=g))],
        target=torch.rand(3, 2 * S, 2 * S, generator=g),
        mask=mask,
        task="edit",
        meta={"colour": "red"},
    )
    small = original.resized(S)
    assert small.context[0].image.shape == small.target.shape == (3, S, S) and small.mask.shape == (1, S, S)
    assert small.text == original.text and small.task == "edit" and small.meta == {"colour": "red"}
    # the same pixels as resizing the [0, 1] picture: resizing is linear, so the [-1, 1] form needs no round trip
    from torchvision.transforms.v2 import functional as TF

    unit = (original.target + 1) / 2
    expected = TF.resize(unit, [S, S], antialias=True) * 2 - 1
    torch.testing.assert_close(small.target, expected, atol=1e-6, rtol=0)
    assert small.target.min() >= -1 and small.target.max() <= 1
    assert set(small.mask.unique().tolist()) <= {0.0, 1.0}  # nearest neighbour keeps a mask binary
    assert original.target.shape == (3, 2 * S, 2 * S) and original.context[0].image.shape == (3, 4 * S, 4 * S)
    same = original.resized(2 * S)
    assert same.target is original.target and same.mask is original.mask  # already that size: shared, not copied


def test_resized_runs_no_validation_again(monkeypatch) -> None:
    import zoo.instruction as schema

    original = Instruction("Draw [ref#1]", context=[item(size=2 * S)], target=img(size=2 * S))
    monkeypatch.setattr(schema, "to_image_tensor", lambda *a, **k: pytest.fail("resizing re-validated an image"))
    assert original.resized(S).context[0].image.shape == (3, S, S)
    with pytest.raises(ValueError, match="positive size"):
        original.resized(0)
