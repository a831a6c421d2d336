"""How a stage trains: the optimizer, its settings and the learning-rate warm-up (`OptimizerSpec`).

The paper trains with "Adafactor, β 0.9/0.999, learning rate 1e-4, 10k warm-up steps" (arXiv 2401.01952 App. A.2.2).
Torch's Adafactor has no first moment, so β1 selects transformers' Adafactor; a β2 cap selects `CappedAdafactor`
(`zoo.lit.adafactor`). A stage takes these settings as flat `__init__` arguments (its YAML keys) and gathers them here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

OPTIMIZERS = ("adamw", "adafactor")


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer and its linear warm-up.

    Args:
        name: `adamw` (β 0.9/0.999) or `adafactor` (torch's, without momentum, unless `adafactor_beta1` or
            `adafactor_beta2_cap` is set).
        learning_rate: the peak learning rate, reached after the warm-up.
        warmup_steps: linear warm-up steps.
        weight_decay: decoupled weight decay.
        adafactor_beta1: Adafactor's first-moment decay; set, it selects transformers' Adafactor with a fixed rate.
        adafactor_beta2_cap: caps Adafactor's second-moment decay 1 − t^−0.8 (`zoo.lit.adafactor`).
        context_lr_scale: the new context layers' learning rate as a multiple of `learning_rate`. They start at zero
            while the backbone starts pretrained, so they may take larger steps (docs/learning.md, lever 12).
    """

    name: Literal["adamw", "adafactor"] = "adamw"
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adafactor_beta1: float | None = None
    adafactor_beta2_cap: float | None = None
    context_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.name!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"model.learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ValueError(f"model.warmup_steps must be ≥ 0, got {self.warmup_steps}")
        if self.weight_decay < 0:
            raise ValueError(f"model.weight_decay must be ≥ 0, got {self.weight_decay}")
        if self.adafactor_beta2_cap is not None and not 0.0 < self.adafactor_beta2_cap < 1.0:
            raise ValueError(f"adafactor_beta2_cap must be in (0, 1), got {self.adafactor_beta2_cap}")
        if not self.context_lr_scale > 0:
            raise ValueError(f"model.context_lr_scale must be > 0, got {self.context_lr_scale}")

    def build(
        self, parameters: Iterable[torch.nn.Parameter], context_parameters: Iterable[torch.nn.Parameter] = ()
    ) -> dict[str, Any]:
        """What Lightning's `configure_optimizers` returns: the optimizer and a per-step warm-up schedule.

        Args:
            parameters: trained at `learning_rate`.
            context_parameters: the new context layers', trained at `learning_rate × context_lr_scale`.
        """
        params, context = list(parameters), list(context_parameters)
        if self.context_lr_scale == 1.0:  # one group, as before the option: checkpoints of either kind resume
            params = params + context
        elif context:
            params = [{"params": params}, {"params": context, "lr": self.learning_rate * self.context_lr_scale}]
        if self.name == "adafactor" and (self.adafactor_beta1 is not None or self.adafactor_beta2_cap is not None):
            from transformers.optimization import Adafactor

            from zoo.lit.adafactor import CappedAdafactor

            settings = dict(
                lr=self.learning_rate,
                beta1=self.adafactor_beta1,
                weight_decay=self.weight_decay,
                scale_parameter=False,
                relative_step=False,
                warmup_init=False,
            )
            if self.adafactor_beta2_cap is None:
                optimizer = Adafactor(params, **settings)
            else:
                optimizer = CappedAdafactor(params, self.adafactor_beta2_cap, **settings)
        elif self.name == "adafactor":
            optimizer = torch.optim.Adafactor(
                params, lr=self.learning_rate, beta2_decay=-0.8, weight_decay=self.weight_decay
            )
        else:
            optimizer = torch.optim.AdamW(
                params, lr=self.learning_rate, betas=(0.9, 0.999), weight_decay=self.weight_decay
            )
        warmup = max(self.warmup_steps, 0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
