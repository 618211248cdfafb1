"""Which machine a benchmark ran on: one line that `bench_flow.py` and `bench_training.py` print first.

The project's 2-core machines come in two kinds that differ about 2x in speed, so a timing means little without
saying which one ran it.
"""

from __future__ import annotations

import os

import torch


def machine_line() -> str:
    """One line naming the CPU this run timed: model, family / model numbers, PyTorch's vector ISA and native bf16.

    The flow model's 1.0 s target (issue 4) was set on the slower, AVX2-only kind: the issue's "bf16 autocast is
    about 2x slower than fp32 on this CPU" holds there, while on the AVX512-BF16 kind bf16 autocast is 2x faster.
    """
    from smokeflow.training.precision import cpu_has_native_bf16

    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break  # the first processor's block is enough
    except OSError:
        pass
    name = fields.get("model name") or "unknown CPU"
    numbers = (f" (family {fields['cpu family']} model {fields['model']})"
               if "cpu family" in fields and "model" in fields else "")
    isa = torch.backends.cpu.get_cpu_capability()
    kind = ("the AVX2-only kind the 1.0 s target was set on" if isa == "AVX2" else
            "not the AVX2-only kind the 1.0 s target was set on")
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"machine: {name}{numbers}, {os.cpu_count()} logical CPUs, PyTorch CPU capability {isa}, {bf16}: {kind}"
