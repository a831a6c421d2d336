"""Many devices: DDP on 2 CPU processes (gloo) from the same recipe, and the FSDP wrap policy for LoRA runs."""

from __future__ import annotations

import pytest
import torch
from cli_helpers import run_zoo, tiny_recipe, write_recipe
from conftest import build_tiny_model

from zoo.lit.fsdp import LoraWrapPolicy, adapter_only


def test_ddp_on_two_cpu_processes_gives_each_rank_different_data(tmp_path) -> None:
    recipe = tiny_recipe(tmp_path / "run")
    recipe["trainer"].update(max_steps=2, devices=2, strategy="ddp")
    recipe["trainer"]["callbacks"].append(
        {"class_path": "cli_helpers.DumpBatchTexts", "init_args": {"folder": str(tmp_path / "texts")}}
    )
    result = run_zoo("fit", "--config", str(write_recipe(tmp_path / "ddp.yaml", recipe)))
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = (tmp_path / "texts" / "rank0.txt").read_text().splitlines()
    rank1 = (tmp_path / "texts" / "rank1.txt").read_text().splitlines()
    assert len(rank0) == len(rank1) == 4  # 2 steps × batch 2 on each rank
    assert not set(rank0) & set(rank1)  # DistributedSamplerWrapper split the mixture's epoch between the ranks
    assert (tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_mixed_precision_from_the_same_recipe(tmp_path) -> None:
    """`--trainer.precision bf16-mixed` (CPU autocast here): training, validation and the sample grid run; the
    weights stay float32 and finite."""
    recipe = tiny_recipe(tmp_path / "run", drop_text_and_context=0.3, drop_context=0.3)
    recipe["trainer"].update(max_steps=2, precision="bf16-mixed", limit_val_batches=1, val_check_interval=2)
    recipe["trainer"]["callbacks"].append(
        {"class_path": "zoo.lit.callbacks.SampleGrid", "init_args": {"num_samples": 2, "num_inference_steps": 2}}
    )
    result = run_zoo("fit", "--config", str(write_recipe(tmp_path / "bf16.yaml", recipe)))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run" / "lightning_logs" / "version_0"
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert (run_dir / "samples" / "final.png").is_file()


def fsdp_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    return list(LoraWrapPolicy()._run_policy(model, set(), {}))


def own_parameters(unit: torch.nn.Module, units: set[torch.nn.Module]) -> list[torch.nn.Parameter]:
    """The parameters FSDP would flatten into `unit`: its own, minus those of nested units."""
    nested = {id(p) for sub in unit.modules() if sub is not unit and sub in units for p in sub.parameters()}
    return [p for p in unit.parameters() if id(p) not in nested]


def test_fsdp_policy_keeps_frozen_and_lora_parameters_in_separate_units() -> None:
    model = build_tiny_model(lora={"rank": 2})
    units = set(fsdp_units(model)) | {model}  # the root is a unit too
    lora_units = 0
    for unit in units:
        params = own_parameters(unit, units)
        flags = {p.requires_grad for p in params}
        assert len(flags) <= 1, f"{type(unit).__name__} mixes frozen and trainable parameters"
        lora_units += flags == {True}
    assert lora_units == 2 * 48  # each lora_A and lora_B of the 48 adapted layers


def test_adapter_only_state_keeps_lora_entries() -> None:
    state = build_tiny_model(lora={"rank": 2}).state_dict()
    kept = adapter_only(state)
    assert kept and all(".lora_" in k for k in kept) and len(kept) == 2 * 48


def test_recipe_strategy_name_fsdp_lora_builds_the_lora_strategy(tmp_path) -> None:
    """`--trainer.strategy fsdp_lora` resolves through Lightning's registry (FSDP itself needs GPUs to run)."""
    from lightning.pytorch import LightningModule

    from zoo.lit.data import InstructionDataModule
    from zoo.lit.fsdp import FSDPStrategyForLoRA
    from zoo.lit.recipe import PARSER_MODE, ZooCLI

    recipe = tiny_recipe(tmp_path / "run", lora={"rank": 2})
    recipe["trainer"].update(devices=2, strategy="fsdp_lora")
    args = ["--config", str(write_recipe(tmp_path / "fsdp.yaml", recipe))]
    cli = ZooCLI(
        LightningModule,
        InstructionDataModule,
        subclass_mode_model=True,
        parser_kwargs={"parser_mode": PARSER_MODE},
        run=False,
        args=args,
    )
    strategy = cli.trainer.strategy
    assert isinstance(strategy, FSDPStrategyForLoRA)
    assert (
        isinstance(strategy.kwargs["auto_wrap_policy"], LoraWrapPolicy) and strategy.kwargs["use_orig_params"] is True
    )
    # and from the command line, where only `python -m zoo` has imported anything
    result = run_zoo("fit", *args, "--trainer.devices", "1", "--trainer.max_steps", "1")
    assert "invalid strategy name" not in result.stderr
    if not torch.cuda.is_available():
        assert result.returncode != 0 and "FullyShardedDataParallel" in result.stderr  # it got as far as wrapping


def fsdp_strategy_with(module):
    """An FSDPStrategyForLoRA attached to `module` as a Trainer would attach it (the model is not wrapped: no GPU)."""
    from lightning.pytorch import Trainer

    from zoo.lit.fsdp import FSDPStrategyForLoRA

    trainer = Trainer(accelerator="cpu", devices=1, strategy=FSDPStrategyForLoRA(), logger=False)
    module.trainer = trainer
    trainer.strategy.model = trainer.strategy._lightning_module = module
    return trainer.strategy


def test_fsdp_lora_checkpoints_save_and_resume_adapters_only(tmp_path, monkeypatch) -> None:
    """The save side keeps the adapters only; the resume side (FSDP loads weights strictly, before any hook) accepts
    that file, keeps the frozen base it already has, and refuses a file that lacks a trainable key."""
    from lightning.pytorch.strategies import FSDPStrategy

    source = build_tiny_model(seed=1, lora={"rank": 2})
    for parameter in source.parameters():
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter)
    # FSDP's gathered full state dict of an unwrapped model is its state dict (gathering needs GPUs)
    monkeypatch.setattr(FSDPStrategy, "lightning_module_state_dict", lambda self: self.lightning_module.state_dict())
    saved = fsdp_strategy_with(source).lightning_module_state_dict()
    assert saved and all(".lora_" in key for key in saved)
    torch.save({"state_dict": saved, "global_step": 2}, tmp_path / "adapters.ckpt")

    resumed = build_tiny_model(seed=1, lora={"rank": 2})  # the same base (init_from's role), fresh adapters
    checkpoint = fsdp_strategy_with(resumed).load_checkpoint(tmp_path / "adapters.ckpt")
    resumed.on_load_checkpoint(checkpoint)
    for key, value in source.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert resumed.strict_loading  # restored after the load

    torch.save({"state_dict": dict(list(saved.items())[1:])}, tmp_path / "short.ckpt")
    with pytest.raises(ValueError, match="missing trainable keys.*lora"):
        fsdp_strategy_with(build_tiny_model(seed=1, lora={"rank": 2})).load_checkpoint(tmp_path / "short.ckpt")


def test_fsdp_full_run_resumes_from_a_checkpoint_without_the_frozen_text_encoder(tmp_path) -> None:
    source = build_tiny_model(seed=5)
    # what `TextEncoder.drop_from` writes for an encoder loaded from a path (e.g. T5-XXL): no text encoder weights
    state = {key: value for key, value in source.state_dict().items() if not key.startswith("text_encoder.")}
    torch.save({"state_dict": state}, tmp_path / "full.ckpt")
    resumed = build_tiny_model(seed=6)
    resumed.on_load_checkpoint(fsdp_strategy_with(resumed).load_checkpoint(tmp_path / "full.ckpt"))
    for key, value in source.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP needs 2 CUDA devices")
def test_fsdp_lora_run_saves_adapter_weights_only(tmp_path) -> None:
    recipe = tiny_recipe(tmp_path / "run", lora={"rank": 2})
    recipe["trainer"].update(max_steps=2, devices=2, accelerator="gpu", strategy="fsdp_lora")
    result = run_zoo("fit", "--config", str(write_recipe(tmp_path / "fsdp.yaml", recipe)))
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(next((tmp_path / "run").glob("**/last.ckpt")), weights_only=True)
    assert checkpoint["state_dict"] and all(".lora_" in k for k in checkpoint["state_dict"])
