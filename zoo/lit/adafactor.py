"""Adafactor with a capped second-moment decay: β2_t = min(1 − t^−0.8, cap).

transformers' `Adafactor` (like torch's) decays the second moment with β2_t = 1 − t^decay_rate (decay_rate −0.8),
which climbs past any fixed value: 0.999 at step ~5.6k, 0.9999 at ~100k. The paper trains with "Adafactor, β
0.9/0.999" (arXiv 2401.01952 App. A.2.2); we read β2 = 0.999 as the cap of big_vision's Adafactor (Zhai et al. 2022,
`beta2_cap`): the usual schedule early on, held at 0.999 once it gets there. transformers computes β2_t from the
group's `decay_rate` at every step, so the cap is a per-step `decay_rate`: the exponent e with t^e = 1 − cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from transformers.optimization import Adafactor


def capped_decay_rate(step: int, decay_rate: float, beta2_cap: float) -> float:
    """The exponent e for step `step` (from 1) such that 1 − step^e = min(1 − step^decay_rate, beta2_cap)."""
    if step < 2:  # 1^e = 1 for every e: β2_1 = 0, the first squared gradient initialises the estimate
        return decay_rate
    return max(decay_rate, math.log(1.0 - beta2_cap) / math.log(step))


class CappedAdafactor(Adafactor):
    """transformers' `Adafactor` with β2_t capped at `beta2_cap`; every other argument is Adafactor's.

    Args:
        params: parameters or parameter groups.
        beta2_cap: the highest second-moment decay (paper A.2.2: 0.999), in (0, 1).
        decay_rate: the exponent of the uncapped schedule 1 − t^decay_rate (Adafactor's −0.8).
    """

    def __init__(
        self, params: Iterable[Any], beta2_cap: float = 0.999, decay_rate: float = -0.8, **kwargs: Any
    ) -> None:
        if not 0.0 < beta2_cap < 1.0:
            raise ValueError(f"adafactor_beta2_cap must be in (0, 1), got {beta2_cap}")
        super().__init__(params, decay_rate=decay_rate, **kwargs)
        for group in self.param_groups:
            group["beta2_cap"], group["uncapped_decay_rate"] = beta2_cap, decay_rate

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        for group in self.param_groups:
            # the step Adafactor is about to take (it increments each parameter's count; a group's counts agree)
            taken = next((self.state[p]["step"] for p in group["params"] if "step" in self.state.get(p, {})), 0)
            group["decay_rate"] = capped_decay_rate(taken + 1, group["uncapped_decay_rate"], group["beta2_cap"])
        return super().step(closure)
