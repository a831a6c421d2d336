"""Tests of the network (`InstructUNet` in its stage): zero-init, training reads context, shared context encoding, the
new layers' placement, configuration errors, generation, context tokens. The diffusion math is in test_objective.py
(condition dropout, the forward process) and test_sampling.py (the guided loop and the named samplers)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import IMAGE_SIZE, build_tiny_model, perturb_context_layers
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from zoo.diffusion.sampler import Guidance
from zoo.instruction import ContextItem, Instruction, collate_instructions
from zoo.models.instruct_unet import ContextTokens, InstructUNet
from zoo.models.presets import PRESETS, resolve_unet_config


def denoiser_inputs(model, batch, seed: int = 0):
    """x_t, t, text, text_mask, context for a batch (context encoded by the model)."""
    g = torch.Generator().manual_seed(seed)
    b = len(batch)
    x = torch.randn(b, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    text, text_mask = model.encode_text(batch.texts)
    context = model.encode_context(batch)
    return x, t, text, text_mask, context


# ------------------------------------------------------------------------------------------------- (a) zero-init
@torch.no_grad()
def test_before_training_the_model_is_the_bare_backbone(tiny_model, task_batch) -> None:
    x, t, text, text_mask, context = denoiser_inputs(tiny_model, task_batch)
    assert context.tokens.shape[1] > 0 and context.mask.any()  # a real, non-empty context
    with_context = tiny_model.model(x, t, text, text_mask, context)
    without_context = tiny_model.model(x, t, text, text_mask, None)
    bare = tiny_model.model.unet(x, t, encoder_hidden_states=text, encoder_attention_mask=text_mask).sample
    # ...and a backbone with no hooks at all: a fresh UNet2DConditionModel holding the same weights.
    clean = UNet2DConditionModel(**tiny_model.model.unet.config)
    clean.load_state_dict(tiny_model.model.unet.state_dict())
    clean_out = clean(x, t, encoder_hidden_states=text, encoder_attention_mask=text_mask).sample
    assert with_context.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(with_context, bare, atol=1e-6, rtol=0)
    torch.testing.assert_close(with_context, clean_out, atol=1e-6, rtol=0)
    torch.testing.assert_close(with_context, without_context, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------ (b) training reads context
LOG_WITHOUT_TRAINER = "ignore:You are trying to `self.log\\(\\)`"


@pytest.mark.filterwarnings(LOG_WITHOUT_TRAINER)
def test_after_a_few_steps_the_context_changes_the_prediction(make_tiny_model, task_instructions) -> None:
    model = make_tiny_model(drop_text_and_context=0.0, drop_context=0.0)
    model.hparams.drop_text_and_context = model.hparams.drop_context = 0.0
    model.train()
    batch = collate_instructions(task_instructions[1:])  # both have context
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(5):
        optimizer.zero_grad()
        loss = model.training_step(batch, step)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        x, t, text, text_mask, context = denoiser_inputs(model, batch, seed=3)
        with_context = model.model(x, t, text, text_mask, context)
        without_context = model.model(x, t, text, text_mask, None)
    assert (with_context - without_context).abs().max().item() > 1e-4
    assert any(layer.to_out.weight.abs().sum() > 0 for layer in model.model.context_layers.values())


def test_rows_without_context_are_unaffected_by_the_context_layers(make_tiny_model, task_instructions) -> None:
    """A trained context layer adds nothing to a sample whose context is empty (padding never leaks)."""
    model = make_tiny_model()
    randomise_context_layers(model)
    batch = collate_instructions(task_instructions)  # row 0 has no context
    with torch.no_grad():
        x, t, text, text_mask, context = denoiser_inputs(model, batch)
        with_context = model.model(x, t, text, text_mask, context)
        without_context = model.model(x, t, text, text_mask, None)
    torch.testing.assert_close(with_context[0], without_context[0], atol=1e-6, rtol=0)
    assert (with_context[1:] - without_context[1:]).abs().max() > 1e-3


def test_context_positions_tell_the_layers_where_each_token_sits(make_tiny_model, task_instructions) -> None:
    """`context_positions`: no new weights, a no-op at zero init, and with trained layers the same context read at
    other places gives another output (without positions, attention is blind to a permutation of the tokens)."""
    from zoo.models.instruct_unet import ContextTokens, grid_code

    plain, placed = make_tiny_model(), make_tiny_model(context_positions=True)
    assert plain.state_dict().keys() == placed.state_dict().keys()
    batch = collate_instructions(task_instructions[1:])
    with torch.no_grad():
        x, t, text, text_mask, context = denoiser_inputs(placed, batch)
        torch.testing.assert_close(placed.model(x, t, text, text_mask, context), placed.model(x, t, text, text_mask))
        code = grid_code(16, 8, torch.device("cpu"), torch.float32)
        assert code.shape == (16, 8) and code[0].ne(code[5]).any()  # distinct places, distinct codes
        for model in (plain, placed):
            randomise_context_layers(model)
        shuffled = torch.randperm(context.cells, generator=torch.Generator().manual_seed(0))
        order = torch.cat([shuffled + i * context.cells for i in range(context.tokens.shape[1] // context.cells)])
        moved = ContextTokens(context.tokens[:, order], context.mask[:, order], context.cells)
        for model, changes in ((plain, False), (placed, True)):
            a, b = model.model(x, t, text, text_mask, context), model.model(x, t, text, text_mask, moved)
            assert ((a - b).abs().max() > 1e-4) == changes


def test_context_norm_and_pooled_context_start_as_no_ops_and_then_read_the_context(
    make_tiny_model, task_instructions
) -> None:
    """`context_norm` and `context_pooled` (docs/learning.md): the model is the backbone at zero init; once the pooled
    path's projection has weights, the context changes the prediction of the rows that have one, and only those."""
    from zoo.models.instruct_unet import POOLED

    model = make_tiny_model(context_norm=True, context_pooled=True)
    assert {"context_layers.pooled.proj.weight", "context_layers.pooled.norm.weight"} <= set(
        k.removeprefix("model.") for k in model.state_dict()
    )
    batch = collate_instructions(task_instructions)  # row 0 has no context
    with torch.no_grad():
        x, t, text, text_mask, context = denoiser_inputs(model, batch)
        torch.testing.assert_close(
            model.model(x, t, text, text_mask, context), model.model(x, t, text, text_mask), atol=1e-6, rtol=0
        )
        torch.nn.init.normal_(model.model.context_layers[POOLED].proj.weight, std=0.5)
        context.projected.clear()  # the zero-init pass cached its (zero) pooled embedding for this context
        with_context, without = model.model(x, t, text, text_mask, context), model.model(x, t, text, text_mask)
        assert model.model.context_layers[POOLED] in context.projected  # pooled once per sampling call
        torch.testing.assert_close(model.model(x, t, text, text_mask, context), with_context, atol=0, rtol=0)
    torch.testing.assert_close(with_context[0], without[0], atol=1e-6, rtol=0)
    assert (with_context[1:] - without[1:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3


# Regression test: a batch in which no sample has context (all text-to-image, or every context dropped) gives
# ContextTokens with zero tokens; the context layers must then add nothing instead of failing to reshape.
@torch.no_grad()
def test_text_only_batch_runs_through_the_denoiser(tiny_model, task_instructions) -> None:
    batch = collate_instructions(task_instructions[:1])
    x, t, text, text_mask, context = denoiser_inputs(tiny_model, batch)
    assert context.tokens.shape[1] == 0
    out = tiny_model.model(x, t, text, text_mask, context)
    torch.testing.assert_close(out, tiny_model.model(x, t, text, text_mask, None), atol=1e-6, rtol=0)


@pytest.mark.filterwarnings(LOG_WITHOUT_TRAINER)
def test_training_step_when_every_context_is_dropped(make_tiny_model, task_batch) -> None:
    model = make_tiny_model(drop_text_and_context=0.0, drop_context=1.0)
    loss = model.training_step(task_batch, 0)
    assert torch.isfinite(loss)
    loss.backward()


def randomise_context_layers(model, std: float = 0.5) -> None:
    with torch.no_grad():
        for layer in model.model.context_layers.values():
            torch.nn.init.normal_(layer.to_out.weight, std=std)
            torch.nn.init.normal_(layer.to_out.bias, std=std)


def test_forward_leaves_no_context_behind(make_tiny_model, task_batch) -> None:
    """After a forward with context, a direct call of the backbone is the plain backbone again."""
    model = make_tiny_model()
    randomise_context_layers(model)
    with torch.no_grad():
        x, t, text, text_mask, context = denoiser_inputs(model, task_batch)
        with_context = model.model(x, t, text, text_mask, context)
        assert model.model._context is None
        after = model.model.unet(x, t, encoder_hidden_states=text, encoder_attention_mask=text_mask).sample
        without_context = model.model(x, t, text, text_mask, None)
    torch.testing.assert_close(after, without_context, atol=1e-6, rtol=0)
    assert (with_context - without_context).abs().max() > 1e-3


def test_deep_copy_reads_its_own_context_layers(make_tiny_model, task_batch) -> None:
    """A deep copy (e.g. an EMA model) runs its own context layers, and the original is unaffected by the copy."""
    model = make_tiny_model()
    randomise_context_layers(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for layer in twin.model.context_layers.values():
            layer.to_out.weight.zero_()
            layer.to_out.bias.zero_()
        x, t, text, text_mask, context = denoiser_inputs(model, task_batch)
        original = model.model(x, t, text, text_mask, context)
        copied = twin.model(x, t, text, text_mask, context)
        plain = twin.model(x, t, text, text_mask, None)
    torch.testing.assert_close(copied, plain, atol=1e-6, rtol=0)  # the copy's zeroed layers, not the original's
    assert (original - plain).abs().max() > 1e-3


# ----------------------------------------------------------------------- (c) shared down stack (nested encoding)
def test_context_encoder_is_the_backbone_down_stack(tiny_model, task_batch) -> None:
    unet = tiny_model.model.unet
    # No copy of the down stack anywhere: the InstructUNet holds the backbone plus the new layers, nothing more.
    own = {id(p) for p in tiny_model.model.parameters()}
    expected = {id(p) for p in unet.parameters()} | {id(p) for p in tiny_model.model.context_layers.parameters()}
    assert own == expected
    # The modules down_features runs are the backbone's own modules, with the very same parameter tensors.
    text, text_mask = tiny_model.encode_text(["[ref#1] toy"])
    called: list[torch.nn.Module] = []
    handles = [m.register_forward_hook(lambda m, a, o: called.append(m)) for m in tiny_model.modules()]
    try:
        with torch.no_grad():
            tiny_model.model.down_features(task_batch.context_images[1, :1], text, text_mask)
    finally:
        for handle in handles:
            handle.remove()
    used = {id(p): p for m in called for p in m.parameters(recurse=False)}
    down = {id(p): p for p in unet.down_blocks.parameters()}
    used_down = [p for key, p in used.items() if key in down]
    assert len(used_down) == len(down)  # every down-block parameter is used ...
    for p in used_down:  # ... as the very same tensor
        assert p is down[id(p)] and p.data_ptr() == down[id(p)].data_ptr()
    unet_params = {id(p) for p in unet.parameters()}
    assert set(used) <= unet_params  # nothing outside the backbone (no context layer, no second encoder)
    assert not any(id(p) in used for p in unet.mid_block.parameters())
    assert not any(id(p) in used for p in unet.up_blocks.parameters())


def test_context_encoding_gradient_reaches_the_down_blocks(make_tiny_model, task_batch) -> None:
    model = make_tiny_model()
    context = model.encode_context(task_batch)
    loss = context.tokens[context.mask].pow(2).mean()
    loss.backward()
    unet = model.model.unet
    down = list(unet.down_blocks.named_parameters())
    assert all(p.grad is not None for _, p in down)
    assert sum(p.grad.abs().sum().item() for _, p in down) > 0
    nonzero = [name for name, p in down if p.grad.abs().sum() > 0]
    assert any(name.startswith("0.") for name in nonzero) and any(name.startswith("1.") for name in nonzero)
    assert any("attn2" in name for name in nonzero)  # the item's own text is read (nested encoding)
    # only the down half: the mid block, up blocks and the new layers are not involved
    for p in [*unet.mid_block.parameters(), *unet.up_blocks.parameters(), *model.model.context_layers.parameters()]:
        assert p.grad is None


def test_encode_context_shapes_and_mask(tiny_model, hand_instructions) -> None:
    """K items of h*w tokens each per sample, at the down stack's last width; padding and dropped items masked."""
    batch = collate_instructions(hand_instructions)  # 0, 1 and 2 items
    h = w = IMAGE_SIZE // 2  # the tiny UNet downsamples once
    c = tiny_model.model.context_dim
    assert c == tiny_model.model.unet.config.block_out_channels[-1]
    context = tiny_model.encode_context(batch)
    assert context.tokens.shape == (3, 2 * h * w, c) and context.mask.shape == (3, 2 * h * w)
    assert context.mask.sum(dim=1).tolist() == [0, h * w, 2 * h * w]
    assert context.tokens[~context.mask].eq(0).all()
    assert context.tokens[context.mask].abs().sum() > 0
    dropped = tiny_model.encode_context(batch, keep=torch.tensor([True, False, True]))
    assert dropped.mask.sum(dim=1).tolist() == [0, 0, 2 * h * w]
    torch.testing.assert_close(dropped.tokens[2], context.tokens[2], atol=1e-5, rtol=1e-5)


def test_padded_items_do_not_change_real_tokens(tiny_model, task_instructions) -> None:
    """Encoding an item alone or next to padding gives the same tokens (padding is never encoded)."""
    one = task_instructions[1]
    alone = tiny_model.encode_context(collate_instructions([one]))
    padded = tiny_model.encode_context(collate_instructions([one, task_instructions[2]]))
    n = alone.tokens.shape[1]
    torch.testing.assert_close(padded.tokens[0, :n], alone.tokens[0], atol=1e-5, rtol=1e-5)
    assert padded.mask[0, :n].all() and not padded.mask[0, n:].any()
    assert padded.tokens[0, n:].eq(0).all()
    assert padded.mask[1].all()


# ---------------------------------------------------------------------------------- (d) the new layers and where
def test_context_layers_are_zero_initialised(tiny_model) -> None:
    layers = list(tiny_model.model.context_layers.values())
    assert layers
    for layer in layers:
        assert layer.to_out.weight.eq(0).all() and layer.to_out.bias.eq(0).all()
        assert layer.to_k.weight.abs().sum() > 0  # the rest is a normal random init


def test_context_layers_sit_only_at_the_lowest_resolution_tiny(tiny_model) -> None:
    model = tiny_model.model
    assert sorted(model.context_layers) == sorted(
        [
            "down_blocks_1_attentions_0_transformer_blocks_0_attn2",
            "mid_block_attentions_0_transformer_blocks_0_attn2",
            "up_blocks_0_attentions_0_transformer_blocks_0_attn2",
            "up_blocks_0_attentions_1_transformer_blocks_0_attn2",
        ]
    )
    # The layers see the feature maps of the lowest resolution: (H/2)^2 query tokens for the two-level tiny UNet.
    seen: dict[str, int] = {}
    handles = [
        layer.register_forward_hook(lambda m, a, o, key=key: seen.__setitem__(key, a[0].shape[1]))
        for key, layer in model.context_layers.items()
    ]
    try:
        image = torch.rand(3, IMAGE_SIZE, IMAGE_SIZE)
        instruction = Instruction("Draw [ref#1]", context=[ContextItem("[ref#1]", "x", image)], target=image)
        batch = collate_instructions([instruction])
        with torch.no_grad():
            x, t, text, text_mask, context = denoiser_inputs(tiny_model, batch)
            model(x, t, text, text_mask, context)
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {key: (IMAGE_SIZE // 2) ** 2 for key in model.context_layers}


def test_context_layers_skip_higher_resolution_attention() -> None:
    """With text cross-attention at two resolutions, only the lower one gets context layers."""
    config = resolve_unet_config("tiny")
    config.update(
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    unet = UNet2DConditionModel(**config)
    model = InstructUNet(unet)
    keys = list(model.context_layers)
    assert keys and all(key.startswith(("down_blocks_1_", "mid_block_", "up_blocks_0_")) for key in keys)
    cross = [n for n, m in unet.named_modules() if isinstance(m, Attention) and m.is_cross_attention]
    stage = [n for n in cross if n.startswith(("down_blocks.1.", "mid_block.", "up_blocks.0."))]
    assert sorted(keys) == sorted(n.replace(".", "_") for n in stage)  # one per cross-attention of that stage
    assert any(n.startswith("down_blocks.0.") for n in cross) and any(n.startswith("up_blocks.1.") for n in cross)


def test_unet_without_low_resolution_cross_attention_is_rejected() -> None:
    config = resolve_unet_config("tiny")
    config.update(
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), mid_block_type=None
    )
    with pytest.raises(ValueError, match="cross-attention"):
        InstructUNet(UNet2DConditionModel(**config))


# -------------------------------------------------------------------------------------- (e) configuration errors
def test_text_width_mismatch_names_both_widths() -> None:
    with pytest.raises(ValueError) as info:
        build_tiny_model(text_encoder="builtin:small-t5")
    message = str(info.value)
    assert "128" in message and "32" in message and "cross_attention_dim" in message


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ValueError) as info:
        build_tiny_model(unet="huge")
    message = str(info.value)
    assert "huge" in message
    assert all(name in message for name in PRESETS)


def test_unknown_builtin_text_encoder_is_named() -> None:
    with pytest.raises(ValueError, match="builtin:nope"):
        build_tiny_model(text_encoder="builtin:nope")


def test_preset_configs_are_copies() -> None:
    config = resolve_unet_config("tiny")
    config["sample_size"] = 999
    assert resolve_unet_config("tiny")["sample_size"] != 999
    given = {"sample_size": 8}
    assert resolve_unet_config(given) == given and resolve_unet_config(given) is not given


# ------------------------------------------------------------------------------------------------ (f) generation
def test_generate_is_deterministic_and_in_range(tiny_model, task_instructions) -> None:
    a = tiny_model.generate(task_instructions, num_inference_steps=3, seed=7)
    b = tiny_model.generate(task_instructions, num_inference_steps=3, seed=7)
    c = tiny_model.generate(task_instructions, num_inference_steps=3, seed=8)
    assert a.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generate_accepts_a_batch_and_an_unguided_setting(tiny_model, task_batch) -> None:
    images = tiny_model.generate(task_batch, num_inference_steps=2, guidance=Guidance(scale=1.0), seed=0)
    assert images.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize("steps", [2, 5])
@pytest.mark.parametrize(
    "guidance",
    [Guidance(scale=1.0), Guidance(scale=3.0), Guidance(scale=3.0, context_scale=2.0, oscillate=True)],
    ids=["none", "single", "two-scales"],
)
def test_generate_encodes_the_context_once(tiny_model, task_instructions, monkeypatch, steps, guidance) -> None:
    calls = {"encode_context": 0, "down_features": 0, "forward": 0}
    inner = tiny_model.model

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(inner, "encode_context", counted("encode_context", inner.encode_context))
    monkeypatch.setattr(inner, "down_features", counted("down_features", inner.down_features))
    handles = [inner.unet.register_forward_pre_hook(lambda m, a: calls.__setitem__("forward", calls["forward"] + 1))]
    key_projections = []
    for layer in inner.context_layers.values():
        handles.append(layer.to_k.register_forward_hook(lambda m, a, o: key_projections.append(m)))
    try:
        tiny_model.generate(task_instructions, num_inference_steps=steps, guidance=guidance, seed=0)
    finally:
        for handle in handles:
            handle.remove()
    assert calls["encode_context"] == 1 and calls["down_features"] == 1
    assert calls["forward"] == steps  # one batched network call per step, whatever the guidance
    # each context layer projects the fixed context tokens once per branch combination, not once per step
    combinations = 2 if guidance.oscillate else 1  # oscillating: guided steps batch three branches, unguided one
    assert len(key_projections) == combinations * len(inner.context_layers)


def test_context_keys_values_are_kept_only_without_gradients(tiny_model, task_batch) -> None:
    inner = copy.deepcopy(tiny_model.model)
    perturb_context_layers(inner)  # trained-looking layers, so the context changes the output
    text, text_mask = tiny_model.encode_text(task_batch.texts)
    t = torch.zeros(len(task_batch), dtype=torch.long)
    x = torch.randn(len(task_batch), 3, IMAGE_SIZE, IMAGE_SIZE)
    context = tiny_model.encode_context(task_batch)
    inner(x, t, text, text_mask, context)  # training: keys/values must stay in the graph of this step only
    assert context.projected == {}
    with torch.no_grad():
        first = inner(x, t, text, text_mask, context)
        assert len(context.projected) == len(inner.context_layers)
        cached = inner(x, t, text, text_mask, context)
        text_only = inner(x, t, text, text_mask, None)
    assert torch.equal(first, cached)
    assert not torch.allclose(first, text_only)


# Regression test: generating for text-only instructions (no context in the whole batch) must work.
def test_generate_text_only(tiny_model, task_instructions) -> None:
    images = tiny_model.generate(task_instructions[:1], num_inference_steps=2, seed=0)
    assert images.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.isfinite(images).all()


# ---------------------------------------------------------------------------------------- (g) context tokens
def test_context_tokens_cat_pads_token_counts() -> None:
    a = ContextTokens(torch.ones(1, 2, 4), torch.ones(1, 2, dtype=torch.bool))
    b = ContextTokens(torch.ones(2, 5, 4), torch.ones(2, 5, dtype=torch.bool))
    joined = ContextTokens.cat([a, b])
    assert joined.tokens.shape == (3, 5, 4) and joined.mask.shape == (3, 5)
    assert joined.mask[0].tolist() == [True, True, False, False, False] and joined.mask[1:].all()
    assert joined.tokens[0, 2:].eq(0).all()
