"""Detail blend: one knob between a flow network as trained and its detail-distilled copy, at no cost per step.

A checkpoint folder may hold, beside ``flow.safetensors``, ``flow_detail.safetensors``: a copy of the same network
trained by ``smokeflow distill-guidance`` to sample as the original does with detail guidance
(:mod:`smokeflow.flow.detail_guidance`), i.e. sharper, at one network call per step. Sampling with

    theta(a) = (1 - a) * theta_flow + a * theta_detail,   a in [0, 1]

moves continuously between the two. Why weights and not outputs: the two networks start equal and the
distillation moves the weights a small step, along which the network's output is close to linear; measured
(model card, "Detail blend"), a = 0.5 of a student of guidance weight 1 scores like a student of weight 0.5 and
like guidance 0.5 itself, so one shipped copy gives every amount, with no second network call per step.
a = 0 is the network as trained (the most accurate frame by frame); a = 1 the sharpest.
"""

from __future__ import annotations

import os

import torch

from smokeflow.errors import CheckpointError
from smokeflow.training.checkpoint_io import load_state_into


class DetailBlend:
    """Sets ``model``'s weights to the blend of its own (as given) and the detail weights in ``detail_path``.

    Holds both weight sets in float32 (8.4M parameters: 2 x 34 MB for the shipped network). ``set`` writes
    the blend into the model in place, so packed or compiled copies of the network see the change
    (:class:`~smokeflow.flow.predictor.FlowPredictor` re-packs when weights change)."""

    def __init__(self, model: torch.nn.Module, detail_path: str | os.PathLike):
        detail_path = os.fspath(detail_path)
        if not os.path.isfile(detail_path):
            raise CheckpointError(detail_path, "no detail weights here: make them with `smokeflow "
                                  "distill-guidance` (its output folder has them), or sample with detail 0")
        copy = type(model)(model.config)
        load_state_into(copy, detail_path)  # CheckpointError naming the file if it does not fit the network
        self.model = model
        self.path = detail_path
        self.base = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
        self.detail = {k: v.float().to(self.base[k].device) for k, v in copy.state_dict().items()}
        self.amount = 0.0

    @torch.no_grad()
    def set(self, amount: float) -> None:
        """Blend ``amount`` in [0, 1] of the detail weights into the model (0: its own weights exactly, 1: the
        detail weights exactly). A repeated amount changes nothing."""
        amount = float(amount)
        if not 0.0 <= amount <= 1.0:
            raise ValueError(f"detail must be in [0, 1], got {amount}")
        if amount == self.amount:
            return
        own = self.model.state_dict()
        for name, base in self.base.items():
            if base.is_floating_point():
                # lerp returns its end points exactly, so 0 and 1 give the two networks bit for bit.
                own[name].copy_(torch.lerp(base, self.detail[name], amount).to(own[name].dtype))
        self.amount = amount
