"""The context-path diagnostics of docs/learning.md (lever 8): the copy task and the context loss gain."""

from __future__ import annotations

import torch
from conftest import IMAGE_SIZE, perturb_context_layers

from experiments.context_gain import context_losses, main, summarise
from experiments.copy_task import TEXT, Copy


def test_the_copy_task_asks_for_its_reference_and_says_nothing_else() -> None:
    task = Copy(num_examples=4, seed=1, image_size=IMAGE_SIZE, split="eval")
    for instruction in (task[0], task[3]):
        assert instruction.text == TEXT and instruction.task == "copy"
        assert [item.marker for item in instruction.context] == ["[ref#1]"]
        torch.testing.assert_close(instruction.target, instruction.context[0].image, atol=0, rtol=0)
    assert (task[0].target - task[1].target).abs().max() > 0.1  # the scenes differ


def test_a_model_that_ignores_its_context_gains_nothing_and_a_reading_one_does(make_tiny_model) -> None:
    instructions = [Copy(num_examples=4, seed=1, image_size=IMAGE_SIZE)[i] for i in range(4)]
    model = make_tiny_model().eval()
    untouched = context_losses(model, instructions, timesteps=(500, 900), batch_size=2)
    assert untouched.shape == (8, 2)
    assert summarise(untouched)["gain"] == 0.0  # zero-initialised context layers: the backbone, context or not
    perturb_context_layers(model)
    read = summarise(context_losses(model, instructions, timesteps=(500, 900), batch_size=2))
    assert read["loss_with"] != read["loss_without"] and read["gain_se"] > 0


def test_the_command_reads_a_checkpoint_and_prints_one_json_line(tmp_path, capsys, make_tiny_model) -> None:
    import json

    from zoo.checkpoint_io import save_weights_checkpoint

    path = save_weights_checkpoint(make_tiny_model(), tmp_path / "tiny.ckpt")
    main([str(path), "--tasks", "copy", "--n", "2", "--weights", "live"])
    result = json.loads(capsys.readouterr().out)
    assert result["copy"]["gain"] == 0.0 and result["copy"]["loss_without"] > 0
