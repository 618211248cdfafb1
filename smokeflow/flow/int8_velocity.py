"""Optional int8 CPU path for the call that runs at every ODE step: the transformer blocks' linear layers with
int8 weights and dynamically quantised int8 activations.

Why: on the 2-core CPU a batch-1 call of the shipped network is 65 token rows through small fp32 matmuls,
and the oneDNN-packed fp32 path (:mod:`smokeflow.flow.packed_velocity`, the default) already reaches about
half of a large matmul's GFLOP/s there. An int8 matmul moves a quarter of the weight bytes and multiplies
twice the values per vector instruction (FBGEMM, AVX2). See ``benchmarks/bench_flow.py`` for the measured
gain and the model card for what it does to the metrics.

What is quantised (:func:`int8_copy` says which layers and why): most linear layers inside the transformer
blocks, their weights once, symmetric per output channel (int8, scale = max |w| / 127 of each row); their
inputs at every call, per tensor, by PyTorch's dynamic quantised linear (``torch.ops.quantized.linear_dynamic``)
with ``reduce_range`` on (7-bit activations), which FBGEMM needs on CPUs without VNNI to keep the int16
partial sums of AVX2's multiply-add from saturating. Outputs are float32, so layer norms, attention, GELU and
the residual sums stay float32, as do the layers that measured most sensitive and the small per-step layers
outside the blocks (x_t projection, time MLP cached by t, head).

Cost in accuracy: see :func:`int8_copy` for one call and the model card for the rollout metrics. So it is
off by default (``int8=True`` in :class:`~smokeflow.flow.predictor.FlowPredictor` and
``SmokeFlow.from_pretrained``, ``--int8`` on the CLI).
It needs a PyTorch with a quantised CPU engine (``int8_available()``); the snapshot semantics are those of
the packed copy (made from the weights at construction, no gradients).
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
import torch.nn as nn

from smokeflow.flow.packed_velocity import PackedLinear, PackedVelocity, _packed_mlp, packing_available
from smokeflow.models.vector_field import VectorField


_AVAILABLE: bool | None = None


def int8_available() -> bool:
    """True when this PyTorch can run dynamic int8 linear layers on this CPU (an FBGEMM or x86 engine): probed
    once by running a tiny one, so a build without them (PyTorch deprecates quantised tensors) says False."""
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            layer = Int8Linear(nn.Linear(4, 2))
            _AVAILABLE = tuple(layer(torch.ones(3, 4)).shape) == (3, 2)
        except (RuntimeError, AttributeError, NotImplementedError):
            _AVAILABLE = False
    return _AVAILABLE


@contextlib.contextmanager
def _cpu_int8_engine():
    """Packs made inside use the x86 quantised engine (FBGEMM or oneDNN, chosen per shape) when this build has
    it, else FBGEMM; the global engine setting is restored afterwards."""
    engines = torch.backends.quantized.supported_engines
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def quantize_weight_per_channel(weight: torch.Tensor) -> torch.Tensor:
    """float [out, in] -> qint8 [out, in], symmetric per output row: scale = max |row| / 127 (1e-8 floor for all-zero
    rows), zero point 0, so the largest weight of each row keeps full resolution."""
    weight = weight.detach().float().contiguous()
    scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-8).double()
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        # PyTorch 2.14 warns that quantised tensors are deprecated; the pinned version has them, and
        # int8_available() reports False on a build that lacks them.
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return torch.quantize_per_channel(weight, scales, zero_points, axis=0, dtype=torch.qint8)


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 per-channel weights, packed once, and int8 activations quantised per call;
    optionally followed by ``activation``. x float [..., in_features] -> float [..., out_features]."""

    def __init__(self, linear: nn.Linear, activation: nn.Module | None = None):
        super().__init__()
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        with _cpu_int8_engine():
            self.packed_params = torch.ops.quantized.linear_prepack(quantize_weight_per_channel(linear.weight), bias)
        self.out_features = linear.out_features
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).float().contiguous()
        # reduce_range=True: 7-bit activations, see the module docstring.
        y = torch.ops.quantized.linear_dynamic(flat, self.packed_params, True)
        if self.activation is not None:
            y = self.activation(y)
        return y.view(*x.shape[:-1], self.out_features)


def int8_copy(model: VectorField) -> VectorField:
    """An inference-only copy of ``model`` with int8 linear layers (:class:`Int8Linear`) where they cost the least
    accuracy, and oneDNN-packed float32 ones (:class:`~smokeflow.flow.packed_velocity.PackedLinear`, where
    available) elsewhere.

    int8: every block's qkv and attention output projection, and the feed-forward layers of every block but
    the last. float32: the U-skip fuse layers, the last block's feed-forward, the x_t projection, the time MLP
    and the head. Why: measured on 10 val frame pairs of the shipped network (error of the predicted clean
    latent relative to the step it makes, at t = 0.2 / 0.5 / 0.8 / 0.92), everything in int8 gave 1.3 / 1.6 /
    4.6 / 12.3 %; keeping the skip fuse layers (which mix two activations of different scale into one
    per-tensor int8 range) in float32 halved that (0.9 / 1.1 / 2.3 / 6.0 %), and the last feed-forward as well
    (the layer nearest the output) brought it to 0.8 / 0.8 / 1.3 / 3.6 %. Per call, interleaved over 15 rounds
    at batch 1: 1.43x, 1.31x and 1.27x the packed float32 speed.
    """
    rows = model.num_positions + 1
    pack = packing_available()

    def float32(linear: nn.Linear, activation: nn.Module | None = None, rows_hint: int = rows) -> nn.Module:
        if pack:
            return PackedLinear(linear, rows_hint, activation)
        return linear if activation is None else nn.Sequential(linear, activation)

    twin = copy.deepcopy(model).float().eval().requires_grad_(False)
    blocks = [*twin.in_blocks, *twin.mid_blocks, *twin.out_blocks]
    for index, block in enumerate(blocks):
        block.attn.qkv = Int8Linear(block.attn.qkv)
        block.attn.proj = Int8Linear(block.attn.proj)
        if block.skip_fuse is not None:
            block.skip_fuse = float32(block.skip_fuse)
        first, activation, second = block.mlp
        if index == len(blocks) - 1:
            block.mlp = nn.Sequential(float32(first, activation), float32(second))
        else:
            block.mlp = nn.Sequential(Int8Linear(first, activation), Int8Linear(second))
    if pack:
        twin.project_noisy = PackedLinear(twin.project_noisy, rows - 1)
        twin.time_mlp = _packed_mlp(twin.time_mlp, 1)
        twin.head = PackedLinear(twin.head, rows - 1)
    return twin


class Int8Velocity(PackedVelocity):
    """Callable with the signature of ``model.velocity(x_t [B,C,h,w], t [B], condition [B,h*w,D], anchor)``, running
    the int8 copy of ``model`` made at construction (time tokens cached as in :class:`PackedVelocity`)."""

    def _make_network(self, model: VectorField) -> VectorField:
        return int8_copy(model)
