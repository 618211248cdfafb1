"""Checkpoint files: atomic writes, safetensors weights, resumable training state, clear errors.

Shared by the VQVAE and the flow trainers. A checkpoint folder holds (see DESIGN.md):

- ``config.yaml``              all config sections the run used
- ``vqvae.safetensors``        VQVAE weights (+ quantiser buffers)
- ``latent_stats.safetensors`` per-channel ``mean`` and ``std`` [C] of the raw latents on the training split
- ``flow.safetensors``         flow weights (flow runs only)
- ``train_state.pt``           optimiser / scheduler / step / RNG, loaded with ``torch.load(weights_only=True)``

Every write goes to ``<name>.tmp`` in the same folder, is flushed and fsynced, then renamed over the real
name (``os.replace`` is atomic on POSIX): a kill at any moment leaves either the old or the new file, never
a truncated one. Reading a truncated or corrupt file raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from smokeflow.errors import CheckpointError

VQVAE_WEIGHTS = "vqvae.safetensors"
LATENT_STATS = "latent_stats.safetensors"
FLOW_WEIGHTS = "flow.safetensors"
DETAIL_FLOW_WEIGHTS = "flow_detail.safetensors"  # optional: the detail-distilled copy of the flow network
CONFIG_FILE = "config.yaml"
TRAIN_STATE = "train_state.pt"
MODEL_CARD = "MODEL_CARD.md"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """Call ``write(tmp_path)`` then atomically rename ``tmp_path`` to ``path``. Returns ``path``."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # Some writers create private (0600) files; checkpoints are shared, so use the usual umask mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_weights(state_dict: dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None, dtype: torch.dtype | None = None) -> str:
    """Save tensors as safetensors, atomically. ``dtype`` (e.g. float16) converts floating tensors."""
    tensors = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()  # channels_last weights must be made contiguous for safetensors
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file raises CheckpointError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(path, "weights file not found")
    if os.path.getsize(path) < 8:
        raise CheckpointError(path, f"file is truncated ({os.path.getsize(path)} bytes; a safetensors file "
                                    "starts with an 8-byte header length)")
    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(path, f"not a readable safetensors file (truncated or corrupt?): {err}") from None


def load_state_into(module: torch.nn.Module, path: str | os.PathLike, device: str | torch.device = "cpu",
                    may_lack: tuple[str, ...] = ()) -> None:
    """Load safetensors weights into ``module`` strictly; missing/unexpected keys or shape mismatches raise
    CheckpointError (the checkpoint does not fit the model described by config.yaml).

    ``may_lack``: name prefixes of parameters the file may lack (they keep their initial values): a network
    with an input the file's network did not have, initialised from it for fine-tuning.
    """
    state = load_weights(path, device)
    own = module.state_dict()
    missing = sorted(k for k in set(own) - set(state) if not (may_lack and k.startswith(tuple(may_lack))))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if mismatched:
            details.append(f"shape mismatch {mismatched[:3]}")
        raise CheckpointError(path, "weights do not fit the model in config.yaml: " + "; ".join(details))
    # Cast to the module's dtypes (shipped weights may be stored as float16).
    state = {k: v.to(own[k].dtype) for k, v in state.items()}
    module.load_state_dict(state, strict=not may_lack)


def file_sha256(path: str | os.PathLike, length: int = 16) -> str:
    """Hex SHA-256 of a file's bytes (first ``length`` hex digits): identifies a checkpoint exactly."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


# ------------------------------------------------------------------------------------ train state
def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and random as tensors (weights_only-loadable)."""
    state = {"torch": torch.get_rng_state(),
             "numpy": torch.from_numpy(np.frombuffer(_numpy_state_bytes(), dtype=np.uint8).copy()),
             "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state_bytes() -> bytes:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    header = np.array([pos, has_gauss], dtype=np.int64).tobytes() + np.array([cached], np.float64).tobytes()
    return header + np.asarray(keys, dtype=np.uint32).tobytes()


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    raw = state["numpy"].numpy().tobytes()
    pos, has_gauss = np.frombuffer(raw[:16], dtype=np.int64)
    cached = np.frombuffer(raw[16:24], dtype=np.float64)[0]
    keys = np.frombuffer(raw[24:], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))
    py = state["python"].tolist()
    random.setstate((3, tuple(py), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(path: str | os.PathLike, state: dict[str, Any]) -> str:
    """Save the resumable state (tensors, numbers, strings, nested dicts/lists only) atomically."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_train_state(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a train state with ``weights_only=True`` (never unpickles code); errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(path, "training state not found (nothing to resume)")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises several types for truncated zip archives / bad pickles
        raise CheckpointError(path, f"training state is truncated or corrupt: {err}") from None
