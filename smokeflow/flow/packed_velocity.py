"""CPU fast path for the call that runs at every ODE step: linear weights pre-packed for oneDNN, GELU fused.

Why: at batch 1 a call of the shipped model multiplies 65 token rows by each weight matrix. Profiled on the
2-core CPU (eager, fp32): ``addmm`` took 70 % of the call and ``gelu`` 8 %. For so few rows the BLAS call
spends about as long re-arranging ("packing") the 256x1024 weight matrix into its kernel's layout, at
every call, as it spends multiplying; and GELU is one more pass over a [65, 1024] activation. Here every
linear layer that runs at each step (x_t projection, time MLP, transformer blocks, head) keeps its weight in
oneDNN's packed layout, made once (``torch.ops.mkldnn._reorder_linear_weight``), and the feed-forward GELU
and the time MLP's SiLU run as fused post-ops (``torch.ops.mkldnn._linear_pointwise``). Measured with calls
alternating between the two, 20 rounds: 1.15x faster than plain at batch 1 and 1.19x at batch 8 (medians over rounds); the
benchmark's interleaved 9-frame rollouts gave 1.08x (``benchmarks/bench_flow.py``).

The token of the flow time t is cached by t's value: with a fixed-step solver the same N times come back in
every frame, and the sinusoidal embedding plus time MLP are ~10 small ops per call (measured ~4 % of a batch-1
call, interleaved over 15 rounds).

Results match the plain network to float32 rounding (~1e-5), not bit for bit (other summation order).

The packed network is an inference-only snapshot: it is made from the weights at construction (later changes
to the model's weights do not reach it; :class:`~smokeflow.flow.predictor.FlowPredictor` makes a new one
before a rollout when they changed) and has no gradients. It is used on CPU in float32 when this
PyTorch has oneDNN (``packing_available()``); elsewhere the plain ``model.velocity`` runs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from smokeflow.models.vector_field import VectorField


def packing_available() -> bool:
    """True when this PyTorch build can run oneDNN packed linear layers (x86/ARM CPU builds with mkldnn)."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and mkldnn is not None
                and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_linear_pointwise"))


def _post_op(activation: nn.Module | None) -> tuple[str, str]:
    """oneDNN's (post-op, algorithm) for an activation fused after the matmul; ValueError for unsupported ones."""
    if activation is None:
        return "none", ""
    if isinstance(activation, nn.GELU):
        return "gelu", "tanh" if activation.approximate == "tanh" else "none"  # "none" = exact erf form
    if isinstance(activation, nn.SiLU):
        return "swish", ""
    raise ValueError(f"cannot fuse activation {type(activation).__name__} into a packed linear layer")


class PackedLinear(nn.Module):
    """``nn.Linear``, optionally followed by a GELU or SiLU ``activation`` run as the matmul's fused post-op,
    with its weight packed once for oneDNN; CPU fp32. x float [..., in_features] -> float [..., out_features].
    """

    def __init__(self, linear: nn.Linear, rows_hint: int, activation: nn.Module | None = None):
        super().__init__()
        weight = linear.weight.detach().float().contiguous()
        # The hint is the number of rows expected per call (65 tokens x batch 1); any row count works.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.out_features = linear.out_features
        self.post_op, self.algorithm = _post_op(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        y = torch.ops.mkldnn._linear_pointwise(flat, self.packed_weight, self.bias, self.post_op, [],
                                               self.algorithm)
        return y.view(*x.shape[:-1], self.out_features)


def _packed_mlp(mlp: nn.Sequential, rows_hint: int) -> nn.Sequential:
    """``Sequential(Linear, activation, Linear)`` -> ``Sequential(PackedLinear with the activation fused,
    PackedLinear)``."""
    first, activation, second = mlp
    return nn.Sequential(PackedLinear(first, rows_hint, activation), PackedLinear(second, rows_hint))


def packed_copy(model: VectorField) -> VectorField:
    """An inference-only copy of ``model`` whose per-step linear layers are :class:`PackedLinear`.

    Packed: the projection of x_t, the time MLP (SiLU fused), every block's attention and skip linear layers
    and its feed-forward MLP (GELU fused), and the head. The conditioning projections (run once per frame,
    not per step) stay plain. (Fusing the blocks' residual sums into their matmuls as well, oneDNN's binary
    post-op, measured no faster and breaks ``torch.compile``'s tracing, so the sums stay separate.)
    """
    rows = model.num_positions + 1
    twin = copy.deepcopy(model).float().eval().requires_grad_(False)
    twin.project_noisy = PackedLinear(twin.project_noisy, rows - 1)
    twin.time_mlp = _packed_mlp(twin.time_mlp, 1)
    for block in [*twin.in_blocks, *twin.mid_blocks, *twin.out_blocks]:
        block.attn.qkv = PackedLinear(block.attn.qkv, rows)
        block.attn.proj = PackedLinear(block.attn.proj, rows)
        if block.skip_fuse is not None:
            block.skip_fuse = PackedLinear(block.skip_fuse, rows)
        block.mlp = _packed_mlp(block.mlp, rows)
    twin.head = PackedLinear(twin.head, rows - 1)
    return twin


class PackedVelocity:
    """Callable with the signature of ``model.velocity(x_t [B,C,h,w], t [B], condition [B,h*w,D], anchor)``, running
    the packed copy of ``model`` made at construction."""

    # Distinct (t, batch) keys kept; a rollout meets N (or a few times N for the higher-order solvers).
    _MAX_CACHED_TIMES = 256

    def __init__(self, model: VectorField):
        self.network = self._make_network(model)
        self._time_tokens: dict[bytes, torch.Tensor] = {}

    def _make_network(self, model: VectorField) -> VectorField:
        """The inference-only copy this callable runs (subclasses swap in other copies)."""
        return packed_copy(model)

    def time_token(self, t: torch.Tensor) -> torch.Tensor:
        """``network.time_token(t)``, cached by the values of t (float [B]): a fixed-step solver meets the same
        N times in every frame of a rollout, and the token depends on t alone (the weights are a snapshot)."""
        key = t.detach().float().cpu().numpy().tobytes()
        token = self._time_tokens.get(key)
        if token is None:
            if len(self._time_tokens) >= self._MAX_CACHED_TIMES:
                self._time_tokens.clear()
            token = self._time_tokens[key] = self.network.time_token(t)
        return token

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor,
                 anchor: torch.Tensor | None = None) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        anchor = None if anchor is None else anchor.float()
        return self.network.velocity(x_t.float(), t, condition.float(), time_token=self.time_token(t),
                                     anchor=anchor)
