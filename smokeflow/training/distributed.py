"""Multi-process training with torch.distributed (DDP), shared by the VQVAE and flow trainers.

- ``--num-gpus N`` (N > 1) on a command that is not already running under torchrun re-launches the same
  command through ``python -m torch.distributed.run --nproc_per_node N`` (:func:`relaunch_with_torchrun`).
  Multi-node: run torchrun yourself on each node (``--nnodes``, ``--rdzv-endpoint``, then ``-m smokeflow
  train ...``); the trainers read the usual RANK / WORLD_SIZE / LOCAL_RANK environment variables.
- Each torchrun process ends through :func:`exit_torchrun_process` (from ``python -m smokeflow``), which skips
  the interpreter's shutdown, where gloo sometimes aborted a finished run.
- :func:`init_distributed` joins the process group: NCCL on CUDA (one GPU per local rank), gloo on CPU
  (so a 2-process run is testable on a CPU-only machine).
- A single process (no torchrun environment) needs no process group at all: ``world_size`` is 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from smokeflow.errors import SmokeflowError

# Set in the children torchrun starts, so that they never re-launch themselves.
_LAUNCHED_ENV = "SMOKEFLOW_TORCHRUN_CHILD"


@dataclass
class DistributedContext:
    """Where this process sits in the job. ``device`` is the torch device this rank trains on."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def running_under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(device: str | None) -> torch.device:
    """'cpu', 'cuda' or None (= cuda when available, else cpu). Asking for cuda without one is an error."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise SmokeflowError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return torch.device(device)


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the torchrun process group when started by torchrun; otherwise a single-process context."""
    base = resolve_device(device)
    if not running_under_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistributedContext(device=base)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        torch.cuda.set_device(local_rank)
        run_device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        run_device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=run_device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_torchrun_process(code: int) -> None:
    """End a process of a torchrun job (``--num-gpus`` > 1 or a job the user launched) with ``code``, skipping the
    interpreter's shutdown.

    Why: on the CPU (gloo), about one 2-rank run in 20 aborted with "terminate called without an active
    exception" (SIGABRT) after both ranks had finished, destroyed their process group and run their atexit
    handlers. torchrun then reports the whole job as failed, though every file was written. Everything this
    package writes is closed by then, so only the standard streams need flushing. Does nothing outside torchrun.
    """
    if not running_under_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def barrier(ctx: DistributedContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean of a tensor over all ranks (returns a new tensor; identity in a single process)."""
    if not ctx.is_distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / ctx.world_size


def broadcast_from_main(value: float, ctx: DistributedContext) -> float:
    """Rank 0's ``value`` on every rank: decisions taken from wall time (stop, checkpoint) must be the
    same everywhere, or ranks fall out of step in their collectives and hang."""
    if not ctx.is_distributed:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def all_reduce_sum(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    if not ctx.is_distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value


def needs_relaunch(num_gpus: int | None) -> bool:
    """True when ``--num-gpus N`` asks for several processes and we are not one of them yet."""
    return bool(num_gpus and num_gpus > 1 and not running_under_torchrun() and not os.environ.get(_LAUNCHED_ENV))


def torchrun_command(num_processes: int, module_args: list[str]) -> list[str]:
    """The command that starts ``python -m smokeflow <module_args>`` in ``num_processes`` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}",
            "-m", "smokeflow", *module_args]


def strip_num_gpus(argv: list[str]) -> list[str]:
    """argv without ``--num-gpus N`` / ``--num-gpus=N`` (the children are single-rank each)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--num-gpus":
            skip = True
            continue
        if arg.startswith("--num-gpus="):
            continue
        out.append(arg)
    return out


def relaunch_with_torchrun(num_processes: int, argv: list[str]) -> int:
    """Run the current CLI command (``argv`` = arguments after ``smokeflow``) under torchrun and wait.

    Returns torchrun's exit status. On CPU the children use gloo, on CUDA one GPU per process (NCCL).
    """
    if num_processes > 1 and torch.cuda.is_available() and num_processes > torch.cuda.device_count():
        device_index = argv.index("--device") + 1 if "--device" in argv else None
        if device_index is None or argv[device_index] != "cpu":
            raise SmokeflowError(f"--num-gpus {num_processes}: only {torch.cuda.device_count()} CUDA device(s) "
                                 "visible")
    cmd = torchrun_command(num_processes, strip_num_gpus(argv))
    env = dict(os.environ, **{_LAUNCHED_ENV: "1"})
    print("launching:", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd, env=env)
