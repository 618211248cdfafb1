"""Optional ``torch.compile`` of the one call that runs at every ODE step: :meth:`VectorField.velocity`.

Why: at batch 1 (one sample, the app's common case) a call of the shipped model is 65 tokens through small
matmuls plus many small element-wise ops (layer norms, GELU, residual adds, reshapes), each paying eager
dispatch overhead. Inductor fuses the element-wise ops into generated C++ kernels. On CPU in float32 it
compiles the oneDNN-packed copy of the network (:mod:`smokeflow.flow.packed_velocity`, the eager default),
with inductor's "freezing" so the packed weights are graph constants, and its C++ wrapper so the dozens of kernels
of a call are launched from C++, not from a Python wrapper. Measured on the 2-core CPU (stage-4 weights, 11
rounds, each variant timed right beside a 1024^3 matmul, medians of the per-round ratios): batch 1 eager
packed 47.4 %, compiled with the Python wrapper 51.2 %, compiled with the C++ wrapper 54.6 % of the matmul's
GFLOP/s; batch 8 69.3 %, 73.4 %, 79.4 %. A 9-frame, 10-step rollout: 0.88 s compiled against 0.95 s packed
eager (medians of 7, ``benchmarks/bench_flow.py``, which prints all three forms).

Cost: the first call compiles (up to about 40 s on 2 cores; 4-12 s once inductor's on-disk cache held the
generated code before the C++ wrapper, 15-23 s in four first calls with it) and each new batch size compiles
again. So it is off by default and switched on with
``compile=True`` (``SmokeFlow.from_pretrained``) or ``--compile`` (CLI). Compilation is an optimisation,
never a requirement: if it fails (no C++ compiler, unsupported platform) the call falls back to eager with
one warning that says why.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from smokeflow.flow.packed_velocity import packed_copy
from smokeflow.models.vector_field import VectorField


class CompiledVelocity:
    """Callable with the signature of ``model.velocity(x_t [B,C,h,w], t [B], condition [B,h*w,D], anchor)``.

    packed: compile the oneDNN-packed copy of the model (:mod:`smokeflow.flow.packed_velocity`; CPU float32)
    instead of the model itself; a failed compile then falls back to that packed copy, run eagerly.
    """

    def __init__(self, model: VectorField, packed: bool = False):
        self.network = packed_copy(model) if packed else model
        self.failure: str | None = None  # why compilation was given up, once it was
        # dynamic=False: the shapes of one rollout repeat (batch K, 65 tokens); static shapes compile the
        # tightest kernels, and a new K simply compiles once more.
        self._compiled = torch.compile(self.network.velocity, dynamic=False)
        # Freezing makes the weights constants of the graph, which oneDNN's packed linear layers require (it
        # holds: rollouts run without gradients). It is read when a call compiles, and torch.compile's
        # per-call ``options`` do not reach it, so each call patches the global setting for its duration.
        self._settings = contextlib.nullcontext
        if packed:
            import torch._inductor.config as inductor_config

            # cpp_wrapper: the generated code calls its kernels from C++ instead of a Python wrapper. At batch 1
            # a call is dozens of small kernels, each paying the Python wrapper's overhead; switching to the C++
            # wrapper took the network from 51 % to 55 % of matmul at batch 1 and from 73 % to 79 % at batch 8
            # (11 interleaved rounds).
            self._settings = lambda: inductor_config.patch(freezing=True, cpp_wrapper=True)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor,
                 anchor: torch.Tensor | None = None) -> torch.Tensor:
        if self.failure is None:
            try:
                with self._settings():
                    return self._compiled(x_t, t, condition, anchor=anchor)
            except Exception as err:  # noqa: BLE001 - any compiler failure falls back to the same eager call
                self.failure = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
                warnings.warn(f"torch.compile of the flow model failed ({self.failure}); running it eagerly "
                              "(same results, slower)", RuntimeWarning, stacklevel=2)
        return self.network.velocity(x_t, t, condition, anchor=anchor)
