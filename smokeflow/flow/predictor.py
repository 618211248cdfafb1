"""FlowPredictor: a trained vector field + its probability path, loaded from a checkpoint folder.

The folder (shipped ``checkpoints/default/`` or a run ``runs/<name>/``) holds ``config.yaml`` (its ``flow``
section describes the network) and ``flow.safetensors`` (the EMA weights used for sampling, fp32 or fp16).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from smokeflow.config import load_config, section_to_dataclass
from smokeflow.errors import CheckpointError
from smokeflow.flow.packed_velocity import PackedVelocity, packing_available
from smokeflow.flow.path import DEFAULT_SIGMA, FlowPath
from smokeflow.flow.sampler import RolloutProgress, RolloutResult, rollout
from smokeflow.models.vector_field import VectorField, VectorFieldConfig
from smokeflow.training.checkpoint_io import DETAIL_FLOW_WEIGHTS, FLOW_WEIGHTS, load_state_into



@dataclass
class FlowConfig:
    """The ``flow`` config section: path sigma and the vector field network settings."""

    sigma: float = DEFAULT_SIGMA
    vector_field_regressor: VectorFieldConfig = field(default_factory=VectorFieldConfig)

    @classmethod
    def from_section(cls, section: dict | None) -> "FlowConfig":
        return section_to_dataclass(cls, section, "flow")


def build_vector_field(config: FlowConfig) -> VectorField:
    return VectorField(config.vector_field_regressor)


def load_flow_weights(model: VectorField, weights_path: str, may_lack_new_inputs: bool = False) -> None:
    """Load safetensors weights (fp32 or fp16) into ``model``; CheckpointError names the file and problem.

    ``may_lack_new_inputs``: the file may come from a network without the warm-start input (fine-tuning with
    ``init_from``); that input then starts at its initial, zero-output weights.
    """
    if not os.path.isfile(weights_path):
        raise CheckpointError(weights_path, "flow weights not found (a VQVAE-only folder has none: train the "
                              "flow model with `smokeflow train`)")
    load_state_into(model, weights_path, may_lack=("warm_start_mlp.",) if may_lack_new_inputs else ())


class FlowPredictor:
    """Predicts future latent frames with a trained vector field (see :func:`smokeflow.flow.sampler.rollout`)."""

    def __init__(self, model: VectorField, path: FlowPath, device: str | torch.device = "cpu",
                 compile: bool = False, pack: bool | None = None, int8: bool = False):
        """compile: run the per-step network call through ``torch.compile`` (see
        :mod:`smokeflow.flow.compiled_velocity`: faster at batch 1, but the first call compiles for seconds).
        pack: run it with the linear weights pre-packed for oneDNN (:mod:`smokeflow.flow.packed_velocity`);
        None = wherever that works (CPU, float32 weights, a PyTorch with oneDNN). Both work on a snapshot of
        the weights, which is made again before a rollout when the model's weights have changed.
        int8: run the transformer blocks with int8 weights and activations (:mod:`smokeflow.flow.int8_velocity`;
        CPU, float32 weights, not with compile), the rest packed as above."""
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.path = path
        can_pack = self.device.type == "cpu" and next(model.parameters()).dtype == torch.float32 \
            and packing_available()
        if pack and not can_pack:
            raise ValueError("pack=True needs float32 weights on the CPU and a PyTorch with oneDNN "
                             f"(device {self.device}, oneDNN {'available' if packing_available() else 'missing'})")
        if pack is None:
            pack = can_pack
        if int8:
            from smokeflow.flow.int8_velocity import int8_available

            if compile:
                raise ValueError("int8 and compile cannot be combined: choose one")
            if self.device.type != "cpu" or next(model.parameters()).dtype != torch.float32 or not int8_available():
                raise ValueError("int8=True needs float32 weights on the CPU and a PyTorch with a quantised CPU "
                                 f"engine (device {self.device}, engines "
                                 f"{list(torch.backends.quantized.supported_engines)})")
        self.int8 = bool(int8)
        self.packed = bool(pack)
        self.compile = bool(compile)
        self.velocity_fn = None
        self._weights_seen = None
        self._refresh()
        self.detail_path = None  # a folder's flow_detail.safetensors, if it has one (see set_detail)
        self._detail_blend = None

    def _weights_fingerprint(self) -> tuple:
        """Changes whenever a weight tensor is replaced or modified in place: every in-place change (optimiser
        step, ``load_state_dict``, ``copy_``) bumps a tensor's version counter (``Tensor._version``)."""
        return tuple((id(p), p._version) for p in self.model.parameters())

    def _refresh(self):
        """(Re)build the packed / compiled per-step call from the model's current weights."""
        self._weights_seen = self._weights_fingerprint()
        if self.int8:
            from smokeflow.flow.int8_velocity import Int8Velocity

            self.velocity_fn = Int8Velocity(self.model)
        elif self.compile:
            from smokeflow.flow.compiled_velocity import CompiledVelocity

            self.velocity_fn = CompiledVelocity(self.model, packed=self.packed)
        elif self.packed:
            self.velocity_fn = PackedVelocity(self.model)

    @classmethod
    def from_config(cls, config: FlowConfig, device="cpu") -> "FlowPredictor":
        """An untrained predictor (random weights) for a config: for tests and benchmarks."""
        return cls(build_vector_field(config), FlowPath(config.sigma), device)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, device: str | torch.device = "cpu",
                    compile: bool = False, pack: bool | None = None, int8: bool = False) -> "FlowPredictor":
        """Load ``config.yaml`` (flow section) and ``flow.safetensors`` from a checkpoint folder."""
        folder = os.fspath(folder)
        config_path = os.path.join(folder, "config.yaml")
        if not os.path.isfile(config_path):
            raise CheckpointError(config_path, "config.yaml not found in the checkpoint folder")
        config = FlowConfig.from_section(load_config(config_path).get("flow"))
        model = build_vector_field(config)
        load_flow_weights(model, os.path.join(folder, FLOW_WEIGHTS))
        predictor = cls(model, FlowPath(config.sigma), device, compile=compile, pack=pack, int8=int8)
        predictor.detail_path = os.path.join(folder, DETAIL_FLOW_WEIGHTS)
        return predictor

    @property
    def has_detail(self) -> bool:
        """Whether the folder had detail weights (``flow_detail.safetensors``) for :meth:`set_detail`."""
        return self.detail_path is not None and os.path.isfile(self.detail_path)

    def set_detail(self, amount: float) -> None:
        """Sample from now on with ``amount`` in [0, 1] of the folder's detail weights blended in
        (:mod:`smokeflow.flow.detail_blend`). 0 needs no detail weights; any other amount raises
        CheckpointError naming the file when the folder has none."""
        amount = float(amount)
        if not 0.0 <= amount <= 1.0:
            raise ValueError(f"detail must be in [0, 1], got {amount}")
        if self._detail_blend is None:
            if amount == 0.0:
                return
            if self.detail_path is None:
                raise ValueError("detail > 0 needs a predictor loaded from a checkpoint folder")
            from smokeflow.flow.detail_blend import DetailBlend

            self._detail_blend = DetailBlend(self.model, self.detail_path)
        self._detail_blend.set(amount)

    def predict_latents(self, z_obs: torch.Tensor, num_frames: int, steps: int = 10, solver: str = "euler",
                        warm_start: float = 0.0, num_samples: int = 1, seed: int = 0,
                        context_policy: str = "per_call",
                        callback: Callable[[RolloutProgress], None] | None = None,
                        project_frame: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        warm_start_source: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        detail_guidance=None) -> RolloutResult:
        """z_obs: float [T_obs >= 1, C, h, w] normalised latents -> RolloutResult(latents [K, F, C, h, w], nfe).

        ``callback`` receives a :class:`~smokeflow.flow.sampler.RolloutProgress` after every solver step;
        ``project_frame`` maps each generated frame before it is fed back, ``warm_start_source`` the reference
        before the warm start mixes it with noise; ``detail_guidance`` a
        :class:`~smokeflow.flow.detail_guidance.DetailGuidance` (see :func:`rollout`).
        """
        expected = (self.model.config.state_size, *self.model.config.state_res)
        if z_obs.ndim != 4 or tuple(z_obs.shape[1:]) != expected:
            raise ValueError(f"z_obs must be [T_obs, {expected[0]}, {expected[1]}, {expected[2]}], "
                             f"got {tuple(z_obs.shape)}")
        if self.velocity_fn is not None and self._weights_fingerprint() != self._weights_seen:
            self._refresh()
        return rollout(self.model, self.path, z_obs, num_frames, steps=steps, solver=solver,
                       warm_start=warm_start, num_samples=num_samples, seed=seed,
                       context_policy=context_policy, callback=callback, velocity_fn=self.velocity_fn,
                       project_frame=project_frame, warm_start_source=warm_start_source,
                       detail_guidance=detail_guidance)
