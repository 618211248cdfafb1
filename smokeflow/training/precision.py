"""Which arithmetic training runs in: bf16 autocast or plain float32, chosen per device.

``precision`` (a training config key, and ``--precision`` of the training commands):

- ``"auto"`` (the default): bf16 autocast on CUDA; on the CPU bf16 autocast only when the CPU multiplies bf16
  natively (AVX512-BF16 or AMX), else float32.
- ``"bf16"``: bf16 autocast on any device (on a CPU without native bf16 it works, but slowly).
- ``"fp32"``: no autocast.

Why the CPU depends on the chip: without native bf16 (AVX2-only or plain AVX-512 CPUs) oneDNN emulates it and
bf16 autocast runs about 2x *slower* than float32; with AVX512-BF16 (e.g. AMD Zen 4, Intel Cooper Lake) it is
faster. Measured on a 2-core AMD EPYC with AVX512-BF16 (torch 2.14.1, 2 threads): a 1024^3 matmul 137 GFLOP/s
in float32 against 407 in bf16, and one training step of the default flow network (width 384, batch 256,
forward, backward, AdamW) 6.72 s in float32 against 3.05 s under bf16 autocast.

Autocast keeps the weights, the optimiser state and the loss in float32 (mixed precision): only the matmuls
and convolutions run in bf16, so checkpoints and resume are the same in either mode.
"""

from __future__ import annotations

# torch is imported inside the functions: the command line imports PRECISIONS for its --precision choices,
# and `smokeflow --help` should not wait for torch.
PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles), as PyTorch detects it."""
    import torch

    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def check_precision(precision: str) -> str:
    """``precision`` lower-cased, or ValueError naming the allowed values."""
    key = str(precision).lower()
    if key not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return key


def uses_bf16(device: "torch.device | str", precision: str = "auto") -> bool:
    """Whether training on ``device`` with ``precision`` ("auto" / "fp32" / "bf16") runs under bf16 autocast."""
    import torch

    precision = check_precision(precision)
    if precision != "auto":
        return precision == "bf16"
    device = torch.device(device)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_native_bf16()


def training_autocast(device: "torch.device | str", precision: str = "auto") -> "torch.autocast":
    """The autocast context of a training forward pass on ``device`` (disabled when :func:`uses_bf16` is False)."""
    import torch

    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, precision))


def describe_precision(device: "torch.device | str", precision: str = "auto") -> str:
    """One line for logs: what ``precision`` resolves to on ``device`` and why."""
    import torch

    device = torch.device(device)
    bf16 = uses_bf16(device, precision)
    mode = "bf16 autocast" if bf16 else "float32"
    if check_precision(precision) != "auto":
        return f"{mode} (precision {precision})"
    if device.type == "cpu":
        why = "this CPU has native bf16" if bf16 else "this CPU has no native bf16 (bf16 would be slower)"
        return f"{mode} (precision auto: {why})"
    return f"{mode} (precision auto on {device.type})"
