"""``SmokeFlow``: the one object users load and call (see DESIGN.md, "Contracts other code relies on").

    pipe = SmokeFlow.from_pretrained("checkpoints/default", device="cpu")
    z = pipe.encode(frames)            # uint8 [T,H,W,3] any size -> float32 [T,C,h,w] normalised latents
    x = pipe.decode(z)                 # [...,C,h,w] -> uint8 [...,64,64,3]
    x = pipe.reconstruct(frames)       # uint8 [T,H,W,3] -> uint8 [T,64,64,3]
    out = pipe.predict(frames, num_frames=9, steps=10, solver="euler", warm_start=0.2, num_samples=1, seed=0)
    out.frames  # uint8 [K,F,64,64,3];  out.nfe; out.seconds

A checkpoint folder holds ``config.yaml``, ``vqvae.safetensors``, ``latent_stats.safetensors`` and, when a
flow model was trained, ``flow.safetensors``. VQVAE-only folders load fine; ``predict`` then raises a clear
:class:`~smokeflow.errors.SmokeflowError`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from smokeflow.config import load_config, section_to_dataclass
from smokeflow.data.image_io import resize_center_crop
from smokeflow.errors import CheckpointError, ConfigError, SmokeflowError
from smokeflow.flow.defaults import DEFAULT_WARM_START, auto_detail
from smokeflow.models.vqvae import VQVAE, LatentNormalizer, VQVAEConfig
from smokeflow.training import checkpoint_io as ckio

# Frames per encoder/decoder call: bounds memory for long videos.
_CHUNK = 256


@dataclass
class Prediction:
    """Result of :meth:`SmokeFlow.predict`.

    frames: uint8 [num_samples, num_frames, 64, 64, 3]; latents: float32 [K, F, C, h, w] (normalised);
    nfe: network evaluations per sample; seconds: wall time including encoding and decoding;
    warm_start_motion: the :class:`~smokeflow.data.smoke_velocity.SmokeVelocity` the warm start advected the
    previous frame by (None: RIVER's warm start, or no warm start); detail: the detail blend amount used, in
    [0, 1] (see :meth:`SmokeFlow.resolve_detail`).
    """

    frames: np.ndarray
    latents: torch.Tensor
    nfe: int
    seconds: float
    warm_start_motion: object = None
    detail: float = 0.0


def frames_to_model_input(frames, size: int) -> torch.Tensor:
    """uint8 [T,H,W,3] or [H,W,3] (numpy or torch), any H/W -> float32 [T,3,size,size] in [-1,1]."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T,H,W,3] on the 0-255 scale, got dtype {frames.dtype}")
    if frames.ndim not in (3, 4) or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be uint8 [T,H,W,3] (T >= 1) or [H,W,3], got shape {frames.shape}")
    frames = resize_center_crop(frames, size)
    # A copy: a frame read from a file can be a read-only array, which torch.from_numpy warns about.
    return torch.from_numpy(np.array(frames, copy=True)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def model_output_to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [...,3,H,W] in [-1,1] -> uint8 numpy [...,H,W,3]."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def _warm_start_motion_mode(value):
    """``warm_start_motion`` -> "auto", "prior", "off" or a SmokeVelocity; ValueError for anything else."""
    from smokeflow.data.smoke_velocity import SmokeVelocity

    if isinstance(value, SmokeVelocity) or value in ("auto", "prior", "off"):
        return value
    if not isinstance(value, str):
        try:
            drift, rise = (float(v) for v in value)
            return SmokeVelocity(drift, rise, "given")
        except (TypeError, ValueError):
            pass
    raise ValueError("warm_start_motion must be 'auto', 'prior', 'off' or (drift, rise) in px per frame, "
                     f"got {value!r}")


class SmokeFlow:
    """A frozen VQVAE with its latent normalisation, plus (optionally) the flow predictor."""

    def __init__(self, vqvae: VQVAE, normalizer: LatentNormalizer, config: dict, folder: str | None = None,
                 device: str | torch.device = "cpu", compile: bool = False, int8: bool = False):
        self.device = torch.device(device)
        self.compile = compile
        self.int8 = int8
        self.vqvae = vqvae.to(self.device).eval()
        self.normalizer = normalizer.to(self.device)
        self.config = config
        self.folder = folder
        self._flow = None

    # ------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu",
                        compile: bool = False, int8: bool = False) -> "SmokeFlow":
        """Load a checkpoint folder (shipped ``checkpoints/default`` or a run folder ``runs/<name>``).

        compile: run the flow network's per-step call through ``torch.compile`` (faster at batch 1; the first
        prediction compiles for up to ~40 s on a 2-core CPU; see :mod:`smokeflow.flow.compiled_velocity`).
        int8: run its transformer blocks with int8 weights and activations (CPU only; faster, slightly different
        numbers; see :mod:`smokeflow.flow.int8_velocity`).

        Raises CheckpointError naming the file for a missing folder/file, a truncated or corrupt weights
        file, or weights that do not fit the config.
        """
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise CheckpointError(folder, "checkpoint folder not found")
        config_path = os.path.join(folder, ckio.CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise CheckpointError(config_path, "config.yaml not found: not a smokeflow checkpoint folder")
        try:
            config = load_config(config_path)
            vqvae_config = section_to_dataclass(VQVAEConfig, config.get("vqvae"), "vqvae")
        except ConfigError as err:
            raise CheckpointError(config_path, f"unusable config: {err}") from None
        vqvae = VQVAE(vqvae_config)
        ckio.load_state_into(vqvae, os.path.join(folder, ckio.VQVAE_WEIGHTS))
        stats_path = os.path.join(folder, ckio.LATENT_STATS)
        if not os.path.isfile(stats_path):
            raise CheckpointError(stats_path, "latent statistics not found (VQVAE training writes them at the "
                                              "end; resume the run with --resume to finish it)")
        from smokeflow.training.vqvae_trainer import load_latent_stats

        normalizer = load_latent_stats(stats_path)
        if normalizer.mean.numel() != vqvae_config.latent_channels:
            raise CheckpointError(stats_path, f"statistics have {normalizer.mean.numel()} channels, the VQVAE "
                                              f"has {vqvae_config.latent_channels}")
        return cls(vqvae, normalizer, config, folder, device, compile=compile, int8=int8)

    @property
    def input_size(self) -> int:
        return self.vqvae.config.input_size

    @property
    def has_flow(self) -> bool:
        return self.folder is not None and os.path.isfile(os.path.join(self.folder, ckio.FLOW_WEIGHTS))

    @property
    def flow(self):
        """The :class:`smokeflow.flow.predictor.FlowPredictor` of this folder (loaded on first use)."""
        if self._flow is None:
            if not self.has_flow:
                raise SmokeflowError(f"{self.folder}: no {ckio.FLOW_WEIGHTS} in this checkpoint folder (a VQVAE-only "
                                     "checkpoint): train the flow model with `smokeflow train` or load a folder "
                                     "that has one, e.g. checkpoints/default")
            from smokeflow.flow.predictor import FlowPredictor

            self._flow = FlowPredictor.from_folder(self.folder, self.device, compile=self.compile, int8=self.int8)
        return self._flow

    # ------------------------------------------------------------------------------- autoencoder
    @torch.inference_mode()
    def encode_raw(self, frames) -> torch.Tensor:
        """uint8 frames [T,H,W,3] (any size) -> raw (unnormalised) latents float32 [T,C,h,w] on the CPU."""
        x = frames_to_model_input(frames, self.input_size)
        out = [self.vqvae.encode(chunk.to(self.device)).float().cpu() for chunk in x.split(_CHUNK)]
        return torch.cat(out)

    def encode(self, frames) -> torch.Tensor:
        """uint8 frames [T,H,W,3] or [H,W,3] (any size, resized to input_size) -> float32 [T,C,h,w]
        normalised latents (~N(0,1) per channel) on the CPU."""
        return self.normalizer.normalize(self.encode_raw(frames))

    @torch.inference_mode()
    def decode(self, z, quantize: bool | None = None) -> np.ndarray:
        """Normalised latents [...,C,h,w] (torch or numpy) -> uint8 frames [...,S,S,3] (S = input_size).

        quantize: snap to the codebook before decoding (default: the config's ``quantize_on_decode``).
        """
        z = torch.as_tensor(z).float()
        if z.ndim < 3:
            raise ValueError(f"latents must be [..., C, h, w], got shape {tuple(z.shape)}")
        leading = z.shape[:-3]
        flat = z.reshape(-1, *z.shape[-3:])
        frames = []
        for chunk in flat.split(_CHUNK):
            raw = self.normalizer.denormalize(chunk.to(self.device))
            frames.append(model_output_to_uint8(self.vqvae.decode(raw, quantize=quantize)))
        out = np.concatenate(frames) if frames else np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        return out.reshape(*leading, *out.shape[1:])

    def reconstruct(self, frames, quantize: bool | None = None) -> np.ndarray:
        """uint8 [T,H,W,3] (any size) -> uint8 [T,S,S,3]: encode then decode (the VQVAE's round trip)."""
        return self.decode(self.encode(frames), quantize=quantize)

    # ---------------------------------------------------------------------------------- prediction
    def resolve_detail(self, detail: float | None, warm_start: float) -> float:
        """The detail blend amount a prediction at warm start ``warm_start`` uses: ``detail`` when given, else
        "auto": :func:`~smokeflow.flow.defaults.auto_detail` (0 at the default warm start and above, 0.25 at
        s = 0.1; lower warm starts soften rollouts and the detail copy makes up for it) when the folder has
        detail weights, 0 when it has none (a folder trained by ``smokeflow train`` alone)."""
        if detail is not None:
            return float(detail)
        if not self.flow.has_detail:
            return 0.0
        return auto_detail(warm_start)

    def predict_latents(self, z_obs, num_frames: int, steps: int = 10, solver: str = "euler",
                        warm_start: float = DEFAULT_WARM_START, num_samples: int = 1, seed: int = 0,
                        context_policy: str = "per_call", callback: Callable | None = None,
                        reencode: bool = False, warm_start_motion="auto", detail_guidance: float = 0.0,
                        detail: float | None = None):
        """Normalised latents z_obs [T_obs,C,h,w] -> RolloutResult(latents [K,F,C,h,w], nfe, seconds,
        warm_start_motion).

        warm_start: s in [0, 1); the default (:data:`~smokeflow.flow.defaults.DEFAULT_WARM_START`, 0.2) is
        the measured best look, 0 is pure noise (blurred).
        reencode: feed each predicted frame back through the autoencoder (:meth:`reencode_latents`) before it
        conditions the next one.
        warm_start_motion (used only when warm_start > 0; see :mod:`smokeflow.flow.advected_warm_start`):
        ``"auto"`` warm-starts each frame from the previous one moved by the smoke's velocity, measured on the
        observed frames (two or more), else guessed from the last one by the checkpoint's motion network, else
        the checkpoint's motion prior, and RIVER's warm start when none exists; ``"prior"`` always uses the
        motion prior (one velocity for the whole frame); ``"off"`` is always RIVER's warm start; a pair
        (drift, rise) in px per frame (or a SmokeVelocity) gives the velocity. The result's
        ``warm_start_motion`` is the :class:`~smokeflow.data.smoke_velocity.SmokeVelocity` used (None: RIVER's
        warm start).
        detail_guidance: weight w >= 0 of :mod:`smokeflow.flow.detail_guidance` (steer each frame away from what
        the reference blurred by 1 px would make of it; keeps rollouts sharp; twice the network evaluations);
        0 (the default) is plain sampling.
        detail: a in [0, 1], the share of the folder's detail-distilled weights (``flow_detail.safetensors``)
        blended into the network (:mod:`smokeflow.flow.detail_blend`): sharper rollouts at no extra cost per
        step, at some cost in PSNR; 0 is the network as trained. None (the default) is "auto"
        (:meth:`resolve_detail`): the amount that keeps rollouts at this warm start as sharp as the default
        warm start keeps them, 0 at s >= 0.2. CheckpointError names the file when a > 0 is asked for and the
        folder has none. The result's ``detail`` is the amount used.
        """
        detail = self.resolve_detail(detail, warm_start)
        self.flow.set_detail(detail)  # first: a bad amount or a missing file fails before any work
        z_obs = torch.as_tensor(z_obs).float().to(self.device)
        _warm_start_motion_mode(warm_start_motion)  # a bad value fails at any s
        velocity = self.warm_start_velocity(z_obs, warm_start_motion) if warm_start > 0 else None
        from smokeflow.flow.detail_guidance import DetailGuidance, blurred_reference, smoke_tokens
        from smokeflow.flow.frame_decodes import FrameDecodes

        # The warm start and detail guidance each decode the reference of every frame: once serves all, and
        # the output (decode_rollout) reuses those decodes of frames 1..F-1.
        decode = FrameDecodes(self.decode_images, keep_all=True)
        source = None
        if velocity is not None:
            from smokeflow.flow.advected_warm_start import AdvectedWarmStart

            # A guessed field is guessed again from every frame it moves, so it follows the smoke.
            field_of = self.motion_net.fields if velocity.source == "predicted" and self.motion_net else None
            source = AdvectedWarmStart(decode, self.encode_images, *velocity.displacement(), field_of=field_of)
        guidance = None
        if detail_guidance:
            # Smoke tokens only: guided everywhere, the black background picks up speckle (model card).
            guidance = DetailGuidance(float(detail_guidance), blurred_reference(decode, self.encode_images),
                                      where=smoke_tokens(decode))
        result = self.flow.predict_latents(z_obs, num_frames, steps=steps, solver=solver, warm_start=warm_start,
                                           num_samples=num_samples, seed=seed, context_policy=context_policy,
                                           callback=callback, project_frame=self.reencode_latents if reencode else None,
                                           warm_start_source=source, detail_guidance=guidance)
        result.warm_start_motion = velocity
        result.detail = detail
        if source is not None or guidance is not None:
            result.decoded_images = [decode.images_of(result.latents[:, f]) for f in range(num_frames)]
        return result

    def decode_rollout(self, result) -> np.ndarray:
        """A rollout's latents [K, F, C, h, w] -> uint8 frames [K, F, S, S, 3], as :meth:`decode` makes them, but
        without decoding again the frames the rollout decoded already (``result.decoded_images``, set by
        :meth:`predict_latents` when a warm start or detail guidance decoded each reference)."""
        latents = result.latents.float().cpu()
        known = getattr(result, "decoded_images", None) or [None] * latents.shape[1]
        missing = [f for f, images in enumerate(known) if images is None]
        frames = np.empty((*latents.shape[:2], self.input_size, self.input_size, 3), np.uint8)
        if missing:
            frames[:, missing] = self.decode(latents[:, missing])
        for f, images in enumerate(known):
            if images is not None:
                frames[:, f] = model_output_to_uint8(images)
        return frames

    @property
    def motion_prior(self):
        """The checkpoint's :class:`~smokeflow.data.smoke_velocity.SmokeVelocity` prior, or None (read once)."""
        if not hasattr(self, "_motion_prior"):
            from smokeflow.data.smoke_velocity import read_motion_prior

            self._motion_prior = read_motion_prior(self.folder)
        return self._motion_prior

    @property
    def motion_net(self):
        """The checkpoint's one-frame :class:`~smokeflow.models.motion_net.MotionFieldNet`, or None (read once)."""
        if not hasattr(self, "_motion_net"):
            from smokeflow.models.motion_net import load_motion_net

            net = load_motion_net(self.folder)
            self._motion_net = net.to(self.device) if net is not None else None
        return self._motion_net

    def warm_start_velocity(self, observed, warm_start_motion="auto"):
        """The velocity the advected warm start uses (see :meth:`predict_latents`): a SmokeVelocity, or None
        for RIVER's warm start. observed: the observed frames, uint8 [T,H,W,3] (any size) or normalised
        latents [T,C,h,w] (measured on their decoded frames)."""
        from smokeflow.data.smoke_velocity import estimate_velocity

        mode = _warm_start_motion_mode(warm_start_motion)
        if mode == "off":
            return None
        if mode == "prior":
            return self.motion_prior
        if mode != "auto":  # a given SmokeVelocity
            return mode
        latents = isinstance(observed, torch.Tensor) and observed.is_floating_point()
        if not latents:
            observed = np.asarray(observed)
            observed = observed[None] if observed.ndim == 3 else observed  # one [H,W,3] frame
        if len(observed) < 2 and self.motion_net is None:  # nothing to measure or guess from: the prior
            return self.motion_prior
        frames = self.decode(observed) if latents else resize_center_crop(observed, self.input_size)
        return estimate_velocity(frames, self.motion_prior, self.motion_net)

    @torch.inference_mode()
    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B,C,h,w] -> float images [B,3,S,S] in [-1,1] on the pipeline's device: what
        :meth:`decode` shows, before rounding to 8 bits."""
        raw = self.normalizer.denormalize(z.to(self.device).float())
        return self.vqvae.decode(raw).clamp(-1, 1)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Float images [B,3,S,S] in [-1,1] -> normalised latents [B,C,h,w] on the images' device."""
        return self.normalizer.normalize(self.vqvae.encode(images.to(self.device).float()).float()).to(images.device)

    def reencode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B,C,h,w] -> the normalised latents of their decoded frames, [B,C,h,w].

        The decode-encode round trip (decoding as :meth:`decode` does, in float, without rounding to 8 bits)
        returns a prediction to latents the encoder actually makes, which is what the flow model was trained
        to be conditioned on; raw predictions drift off them over a rollout.
        """
        return self.encode_images(self.decode_images(z)).to(z.device)

    def predict(self, frames, num_frames: int = 9, steps: int = 10, solver: str = "euler",
                warm_start: float = DEFAULT_WARM_START, num_samples: int = 1, seed: int = 0,
                context_policy: str = "per_call",
                callback: Callable | None = None, reencode: bool = False, warm_start_motion="auto",
                detail_guidance: float = 0.0, detail: float | None = None) -> Prediction:
        """Observed uint8 frames [T>=1,H,W,3] (any size) -> Prediction with frames uint8 [K,F,S,S,3].

        reencode, warm_start_motion, detail_guidance, detail: see :meth:`predict_latents`."""
        start = time.perf_counter()
        # Fail early (before encoding) for a VQVAE-only folder, a bad detail amount or missing detail weights.
        detail = self.resolve_detail(detail, warm_start)
        self.flow.set_detail(detail)
        z_obs = self.encode(frames)
        # Measured on the frames themselves (resized), not on their reconstructions.
        _warm_start_motion_mode(warm_start_motion)
        velocity = self.warm_start_velocity(frames, warm_start_motion) if warm_start > 0 else None
        result = self.predict_latents(z_obs, num_frames, steps=steps, solver=solver, warm_start=warm_start,
                                      num_samples=num_samples, seed=seed, context_policy=context_policy,
                                      callback=callback, reencode=reencode,
                                      warm_start_motion=velocity if velocity is not None else "off",
                                      detail_guidance=detail_guidance, detail=detail)
        latents = result.latents.float().cpu()
        frames_out = self.decode_rollout(result)
        return Prediction(frames_out, latents, int(result.nfe), time.perf_counter() - start,
                          result.warm_start_motion, detail)
