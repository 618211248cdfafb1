"""LPIPS (Zhang et al. 2018, the ``lpips`` package, AlexNet trunk): load it only from real weights.

LPIPS has two parts: the small linear "calibration" layers, which ship inside the ``lpips`` package, and the
AlexNet trunk, which ``lpips`` normally downloads from torchvision (``alexnet-owt-7be5be79.pth``). Hub
downloads fail on our machines, and ``lpips.LPIPS()`` would then either crash or - worse, with
``pnet_rand=True`` - run on a random trunk. So we never let ``lpips`` fetch anything:

1. build ``lpips.LPIPS(pretrained=False, pnet_rand=True)`` (no download, no file read),
2. load the linear layers from the package's ``weights/v0.1/alex.pth`` (``torch.load(weights_only=True)``),
3. load the AlexNet ``features.*`` tensors from the backbone file - a path the user gives, or the torch hub
   cache ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`` - and check every tensor arrived.

When the file is absent the result says so, with the one-line fix, and ``model`` is None: LPIPS is then
reported as unavailable, never computed from random weights. The file's SHA-256 is compared with the prefix
torchvision publishes in the file name (``7be5be79``): a different file still loads (it is usable as a
training loss), but ``reference_weights`` is False and :attr:`LpipsAvailability.metric_name` does not call
the number LPIPS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings

import numpy as np
import torch

ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILENAME}"
ALEXNET_SHA256_PREFIX = "7be5be79"
# AlexNet ``features`` index -> LPIPS slice holding it (lpips splits the trunk after each ReLU it taps).
_FEATURE_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
# Pairs per forward pass when scoring many frames.
_BATCH = 256


@dataclasses.dataclass
class LpipsAvailability:
    """Outcome of :func:`load_lpips`.

    model: an ``lpips.LPIPS`` in eval mode with frozen weights, or None when unavailable.
    reason: empty when available; otherwise why not, followed by the one-line fix.
    backbone_path: the AlexNet weights file that was loaded (or looked for).
    reference_weights: True when that file's SHA-256 matches torchvision's published
        ``alexnet-owt-7be5be79.pth``; only then is the number the published LPIPS.
    """

    model: torch.nn.Module | None
    reason: str
    backbone_path: str | None = None
    reference_weights: bool = False

    @property
    def available(self) -> bool:
        return self.model is not None

    @property
    def metric_name(self) -> str:
        """Name under which a number from this model may be shown."""
        if self.model is None:
            return "LPIPS (unavailable)"
        if self.reference_weights:
            return "LPIPS (AlexNet, v0.1)"
        return "LPIPS-architecture distance with NON-reference AlexNet weights (not LPIPS)"


def default_backbone_path() -> str:
    """Where torchvision (and so ``lpips``) caches the AlexNet weights: the torch hub checkpoints dir."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", ALEXNET_FILENAME)


def unavailable_fix() -> str:
    """The one-line fix shown whenever LPIPS is unavailable."""
    return (
        f"fix: download {ALEXNET_URL} on a machine with internet and copy it to "
        f"{default_backbone_path()} (or pass its path with --lpips-weights PATH)"
    )


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_lpips(weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> LpipsAvailability:
    """Build LPIPS (AlexNet, v0.1) from local weights only.

    weights_path: torchvision's AlexNet state dict (``alexnet-owt-7be5be79.pth``); default: the torch hub
        cache. The model takes float tensors [B, 3, H, W] in [-1, 1] and returns distances [B, 1, 1, 1];
        it is frozen (``requires_grad=False``) but differentiable w.r.t. its inputs, so it works as a loss.
    Never raises for a missing or unreadable file: the problem is in ``.reason`` instead.
    """
    path = os.fspath(weights_path) if weights_path is not None else default_backbone_path()
    if not os.path.isfile(path):
        return LpipsAvailability(None, f"LPIPS unavailable: AlexNet weights not found at {path}; {unavailable_fix()}", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated / not a torch file / unsafe pickle: report, don't crash
        return LpipsAvailability(
            None, f"LPIPS unavailable: cannot read {path} ({type(err).__name__}: {err}); {unavailable_fix()}", path
        )
    if not isinstance(state, dict):
        return LpipsAvailability(None, f"LPIPS unavailable: {path} is not a state dict; {unavailable_fix()}", path)

    import lpips

    with warnings.catch_warnings():
        # lpips calls torchvision's deprecated ``pretrained=`` argument; with pnet_rand=True it means "no weights".
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)

    # The linear calibration layers ship inside the lpips package.
    lin_path = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "alex.pth")
    lin_state = torch.load(lin_path, map_location="cpu", weights_only=True)
    trunk_state = {}
    for index, slice_number in _FEATURE_SLICES.items():
        for kind in ("weight", "bias"):
            source = f"features.{index}.{kind}"
            if source not in state:
                return LpipsAvailability(
                    None,
                    f"LPIPS unavailable: {path} has no tensor '{source}', so it is not a torchvision AlexNet "
                    f"state dict; {unavailable_fix()}",
                    path,
                )
            trunk_state[f"net.slice{slice_number}.{index}.{kind}"] = state[source]
    expected = {**lin_state, **trunk_state}
    try:
        model.load_state_dict(expected, strict=False)
    except RuntimeError as err:  # shape mismatch
        return LpipsAvailability(None, f"LPIPS unavailable: {path} does not fit AlexNet ({err}); {unavailable_fix()}", path)
    # Verify every tensor really arrived (strict=False would silently skip a misspelt key).
    loaded = model.state_dict()
    for key, tensor in expected.items():
        if key not in loaded or not torch.equal(loaded[key], tensor.to(loaded[key].dtype)):
            return LpipsAvailability(None, f"LPIPS unavailable: tensor {key} did not load from {path}", path)

    model = model.to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    reference = _sha256(path).startswith(ALEXNET_SHA256_PREFIX)
    return LpipsAvailability(model, "", path, reference_weights=reference)


@torch.no_grad()
def lpips_distance(model: torch.nn.Module, pred, target) -> np.ndarray:
    """LPIPS per frame. pred/target uint8 numpy [..., H, W, 3] (broadcast) -> float64 [...] (0 = identical)."""
    pred, target = np.broadcast_arrays(np.asarray(pred), np.asarray(target))
    if pred.dtype != np.uint8 or pred.shape[-1] != 3:
        raise TypeError(f"expected uint8 [..., H, W, 3] frames, got {pred.dtype} {pred.shape}")
    leading = pred.shape[:-3]
    height, width = pred.shape[-3:-1]
    flat_pred = pred.reshape(-1, height, width, 3)
    flat_target = target.reshape(-1, height, width, 3)
    device = next(model.parameters()).device
    out = np.empty(flat_pred.shape[0], dtype=np.float64)
    for start in range(0, flat_pred.shape[0], _BATCH):
        stop = start + _BATCH
        # uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1], the input range lpips expects.
        p = torch.from_numpy(flat_pred[start:stop]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        t = torch.from_numpy(flat_target[start:stop]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        out[start:stop] = model(p, t).flatten().double().cpu().numpy()
    return out.reshape(leading)
