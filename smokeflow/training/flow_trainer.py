"""Train the RIVER vector field on cached VQVAE latents. Readable top to bottom: config, pieces, the loop.

One training step, per clip of T latent frames from the latent cache:
  draw tau ~ U{3..T}, reference tau-1, context c ~ U{1..tau-2} (1-based), t ~ U[0,1], eps ~ N(0, I);
  x_t = (1 - (1 - sigma) t) eps + t z_tau; loss = || v(x_t, t | z_ref, z_ctx, tau - c) - (z_tau - (1-sigma) eps) ||^2
Options over RIVER (each off/on in ``flow_training``): smoke-token weighting of the loss, noise on the
conditioning latents (against exposure bias in long rollouts), EMA of the weights (used for sampling),
training the distance-1 case (context = reference) that sampling from one observed frame uses.

Determinism and exact resume: every random draw of step k on rank r (which clips, flips, tau, c, t, eps)
comes from generators seeded by (seed, k, r), so a resumed run repeats exactly what an uninterrupted run
would have done; the state saved is model, optimiser, scheduler, EMA, step and the global RNG.

Distributed: under torchrun each rank draws different clips (its rank is in the seed) and DDP averages
gradients, so all ranks end with equal weights; only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import torch

from smokeflow.config import save_config, section_to_dataclass
from smokeflow.errors import CheckpointError, ConfigError, DataError
from smokeflow.flow.path import (FlowPath, change_token_weights, flow_matching_loss, sample_frame_indices,
                                  smoke_token_weights)
from smokeflow.flow.predictor import FlowConfig, build_vector_field
from smokeflow.flow.sampler import rollout
from smokeflow.models.vector_field import DATA_PREDICTION_MIN_GAP, VectorField
from smokeflow.training.checkpoint_io import (FLOW_WEIGHTS, LATENT_STATS, TRAIN_STATE, VQVAE_WEIGHTS,
                                              load_train_state, rng_state, save_train_state, save_weights,
                                              set_rng_state)
from smokeflow.training.distributed import barrier, cleanup_distributed, init_distributed
from smokeflow.training.rollout_reference import chained_predicted_clips
from smokeflow.training.precision import check_precision, describe_precision, training_autocast
from smokeflow.training.step_noise import device_noise_generator, normal_on
from smokeflow.training.run_logger import RunLogger, truncate_after_step

# Files of the VQVAE checkpoint copied into every flow run, so the run folder is self-contained.
VQVAE_FILES = (VQVAE_WEIGHTS, LATENT_STATS)


@dataclass
class FlowTrainingConfig:
    """The ``flow_training`` config section.

    Optimisation: AdamW(learning_rate, betas, weight_decay), linear warm-up over ``warmup_steps`` then cosine
    decay to ``min_lr_ratio * learning_rate`` at ``max_steps``; gradients clipped to norm ``grad_clip``.
    Options: ``ema_decay`` (0 = no EMA; the EMA weights are the ones saved for sampling), ``smoke_weight``
    (1 = off: loss weight of smoke positions, found as positions whose latent differs from the latent of a
    black frame by more than ``smoke_threshold`` RMS), ``condition_noise`` (0 = off: Gaussian noise of std
    U[0, condition_noise] added to reference and context latents), ``reference_as_context_prob``
    (0 = RIVER: share of clips whose context is the reference itself, distance 1),
    ``rollout_reference_prob`` (0 = off: share of clips whose reference frame is the model's own prediction,
    made with ``rollout_reference_steps`` Euler steps from warm start ``rollout_reference_warm_start``, in
    chains of up to ``rollout_reference_chain`` frames predicted from predictions; see
    :mod:`smokeflow.training.rollout_reference`), ``warm_start_path_prob`` (0 = off: share of clips trained on
    the warm-start path of :mod:`smokeflow.flow.path` from the reference frame, with s ~ U[0,
    ``warm_start_path_max``] and t ~ U[s, 1], so the network learns the states the warm-started sampler visits),
    ``loss_time_power`` (0 = RIVER: each clip's squared velocity error weighted by max(1 - t, 0.05) ** p; with a
    data-prediction network the velocity error is the clean-latent error over (1 - t), so with t ~ U[0, 1] the
    half t < 0.5, where each frame's motion is decided, carries under 3 % of the loss weight and the near-clean t,
    where the network denoises detail, the rest; p = 2 weighs the clean-latent error alike at every t),
    ``change_weight`` (1 = off: positions weighted by how much the true frame changes there from the frame before,
    relative to the batch's mean change; :func:`smokeflow.flow.path.change_token_weights`).
    Data: ``preload_latents`` ("auto" = on when training on CUDA, or true / false) holds the training split's
    latent cache in the device's memory and gathers batches there (:mod:`smokeflow.data.preloaded_latents`;
    same batches, without the per-clip read loop of every step).
    Arithmetic: ``precision`` ("auto": bf16 autocast on CUDA and on CPUs with native bf16, float32 on other
    CPUs; or "fp32" / "bf16"; :mod:`smokeflow.training.precision`).
    Bookkeeping: every ``log_every`` steps a metrics line, every ``val_every`` a validation loss over
    ``val_batches`` batches, every ``sample_every`` a rollout GIF, every ``checkpoint_every`` a checkpoint.
    """

    batch_size: int = 32
    learning_rate: float = 3e-4
    betas: list = dataclasses.field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.01
    warmup_steps: int = 500
    max_steps: int = 20000
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    smoke_weight: float = 1.0
    smoke_threshold: float = 0.5
    condition_noise: float = 0.0
    reference_as_context_prob: float = 0.1
    rollout_reference_prob: float = 0.0
    rollout_reference_steps: int = 3
    rollout_reference_warm_start: float = 0.1
    rollout_reference_chain: int = 1
    warm_start_path_prob: float = 0.0
    warm_start_path_max: float = 0.5
    loss_time_power: float = 0.0
    change_weight: float = 1.0
    log_every: int = 25
    val_every: int = 250
    val_batches: int = 4
    sample_every: int = 1000
    sample_steps: int = 10
    checkpoint_every: int = 250
    preload_latents: str | bool = "auto"
    precision: str = "auto"

    def __post_init__(self):
        self.precision = check_precision(self.precision)
        preload = {"auto": "auto", "true": True, "on": True, "false": False, "off": False}
        key = str(self.preload_latents).lower()
        if key not in preload:
            raise ValueError(f"preload_latents must be auto, true or false, got {self.preload_latents!r}")
        self.preload_latents = preload[key]
        for name in ("batch_size", "max_steps", "log_every", "val_every", "val_batches", "sample_every",
                     "sample_steps", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.smoke_weight < 1.0 or self.condition_noise < 0 or not 0 <= self.reference_as_context_prob <= 1:
            raise ValueError("smoke_weight must be >= 1, condition_noise >= 0, reference_as_context_prob in [0,1]")
        if not 0 <= self.rollout_reference_prob <= 1 or int(self.rollout_reference_steps) < 1 \
                or not 0 <= self.rollout_reference_warm_start < 1 or int(self.rollout_reference_chain) < 1:
            raise ValueError("rollout_reference_prob must be in [0, 1], rollout_reference_steps >= 1, "
                             "rollout_reference_warm_start in [0, 1), rollout_reference_chain >= 1")
        if not 0 <= self.warm_start_path_prob <= 1 or not 0 <= self.warm_start_path_max < 1:
            raise ValueError("warm_start_path_prob must be in [0, 1] and warm_start_path_max in [0, 1)")
        if self.loss_time_power < 0:
            raise ValueError(f"loss_time_power must be >= 0, got {self.loss_time_power}")
        if self.change_weight < 1.0:
            raise ValueError(f"change_weight must be >= 1 (1 = off), got {self.change_weight}")

    @classmethod
    def from_section(cls, section: dict | None) -> "FlowTrainingConfig":
        return section_to_dataclass(cls, section, "flow_training")


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of a base learning rate at ``step``: linear warm-up over ``warmup_steps``, then cosine to
    ``min_lr_ratio`` at ``total_steps`` (and flat after it)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def learning_rate_factor(step: int, config: FlowTrainingConfig) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then cosine to min_lr_ratio."""
    return warmup_cosine_factor(step, config.warmup_steps, config.max_steps, config.min_lr_ratio)


class EMA:
    """Exponential moving average of a model's parameters (and buffers copied as they are).

    The decay ramps up as min(decay, (1 + n) / (10 + n)) so that short CPU runs are not dominated by the
    random initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[name].mul_(decay).add_(value.detach().float(), alpha=1 - decay)
            else:
                self.shadow[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict):
        self.decay, self.num_updates = state["decay"], state["num_updates"]
        # The train state is loaded onto the CPU; the shadow lives where the model does (CUDA too).
        self.shadow = {k: v.to(self.shadow[k].device, copy=True) for k, v in state["shadow"].items()}


def step_generator(seed: int, step: int, rank: int, stream: int) -> torch.Generator:
    """A generator that depends only on (seed, step, rank, stream): the key to exact resume."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1009 + rank) * 7 + stream)


def load_batch(dataset, indices: list[int], device) -> torch.Tensor:
    """Stack dataset items (float32 [T, C, h, w]) -> float32 [B, T, C, h, w] on ``device``.

    A latent cache's clips are stacked as stored (float16) and converted on ``device``: the same values
    (float16 -> float32 is exact) for half the bytes read, stacked and copied (batches of 256: ~2x faster
    on the 2-core CPU).
    """
    if hasattr(dataset, "stored_clip"):
        stacked = np.stack([dataset.stored_clip(i) for i in indices])
        return torch.from_numpy(stacked).to(device).float()
    return torch.stack([torch.as_tensor(dataset[i]) for i in indices]).to(device)


def training_loss(model, path: FlowPath, clips: torch.Tensor, config: FlowTrainingConfig,
                  generator: torch.Generator, background: torch.Tensor | None,
                  noise_on_device: bool = True) -> torch.Tensor:
    """RIVER's loss on a batch of latent clips [B, T, C, h, w] with all random draws from ``generator``
    (latent-sized noise through :func:`device_noise_generator`; with ``noise_on_device`` False it is drawn
    from ``generator`` on the host, so a CPU and a GPU call see the same draws, e.g. to compare precisions)."""
    b, num_frames = clips.shape[:2]
    noise = device_noise_generator(generator, clips.device) if noise_on_device else generator
    target_idx, ref_idx, ctx_idx = sample_frame_indices(b, num_frames, generator,
                                                        config.reference_as_context_prob)
    rows = torch.arange(b)
    z, z_ref, z_ctx = clips[rows, target_idx], clips[rows, ref_idx], clips[rows, ctx_idx]
    z_true_previous = z_ref  # the true frame before the target, for change_weight (the reference may be replaced)
    device = clips.device
    if config.rollout_reference_prob > 0:
        chosen = torch.rand(b, generator=generator) < config.rollout_reference_prob
        if chosen.any():
            used = clips.clone()
            # Row indices made on the host: a boolean mask on the GPU would make the host wait for it.
            chosen_rows = chosen.nonzero().squeeze(1).to(device)
            used[chosen_rows] = chained_predicted_clips(
                model, path, clips[chosen_rows], ref_idx[chosen], int(config.rollout_reference_chain),
                int(config.rollout_reference_steps), config.rollout_reference_warm_start, generator,
                noise_generator=noise, precision=config.precision)
            # A context frame inside the predicted chain (or the reference itself) is a prediction too.
            z_ref, z_ctx = used[rows, ref_idx], used[rows, ctx_idx]
    z_prev = z_ref  # the warm start's previous frame: the reference as the sampler has it, before the noise below
    if config.condition_noise > 0:
        std = (torch.rand(b, 1, 1, 1, generator=generator) * config.condition_noise).to(device)
        z_ref = z_ref + std * normal_on(z_ref.shape, noise, device)
        z_ctx = z_ctx + std * normal_on(z_ctx.shape, noise, device)
    t = torch.rand(b, generator=generator).to(device)
    eps = normal_on(z.shape, noise, device)
    s = torch.zeros(b, device=device)
    if config.warm_start_path_prob > 0:
        # Drawn only when on, so runs without the option keep RIVER's exact random stream.
        warm = torch.rand(b, generator=generator) < config.warm_start_path_prob
        s = torch.where(warm, torch.rand(b, generator=generator) * config.warm_start_path_max, 0.0).to(device)
        t = s + (1.0 - s) * t  # t ~ U[s, 1]: the sampler never visits t < s
        x_t = path.sample_xt(z, eps, t, z_prev, s)
        target = path.target_velocity(z, eps, z_prev, s)
    else:
        x_t = path.sample_xt(z, eps, t)
        target = path.target_velocity(z, eps)
    distance = (target_idx - ctx_idx).to(device)
    with training_autocast(device, config.precision):
        predicted = model(x_t, t, z_ref, z_ctx, distance, s)
    weights = None
    if config.smoke_weight > 1.0:
        bg = background if background is not None else z.median(dim=0).values  # fallback: typical latent
        weights = smoke_token_weights(z, bg.to(device), config.smoke_weight, config.smoke_threshold)
    if config.change_weight > 1.0:
        change = change_token_weights(z, z_true_previous, config.change_weight)
        weights = change if weights is None else weights * change
    if config.loss_time_power > 0:
        gap = (1.0 - t).clamp(min=DATA_PREDICTION_MIN_GAP).pow(config.loss_time_power).view(b, 1, 1, 1)
        weights = gap if weights is None else weights * gap
    return flow_matching_loss(predicted, target, weights)


# --- the run folder -----------------------------------------------------------------------------------------
def prepare_run_folder(run_dir: str, config: dict, vqvae_checkpoint: str | None) -> None:
    """Create ``run_dir`` with config.yaml and the VQVAE files copied from ``vqvae_checkpoint``."""
    os.makedirs(run_dir, exist_ok=True)
    if vqvae_checkpoint:
        for name in VQVAE_FILES:
            src = os.path.join(vqvae_checkpoint, name)
            if not os.path.isfile(src):
                raise CheckpointError(src, "VQVAE checkpoint file not found (is --vqvae-checkpoint a VQVAE "
                                      "run or checkpoint folder?)")
            if os.path.abspath(src) != os.path.abspath(os.path.join(run_dir, name)):
                shutil.copyfile(src, os.path.join(run_dir, name))
        # Keep the VQVAE's own sections, so the run folder describes the VQVAE it copied.
        from smokeflow.config import load_config

        vqvae_config_path = os.path.join(vqvae_checkpoint, "config.yaml")
        if os.path.isfile(vqvae_config_path):
            vq = load_config(vqvae_config_path)
            config = {**config, **{k: vq[k] for k in ("vqvae", "vqvae_training") if k in vq}}
    save_config(config, os.path.join(run_dir, "config.yaml"))


def find_vqvae_checkpoint(data_root: str) -> str | None:
    """The VQVAE checkpoint announced by ``<data_root>/VQVAE_READY`` (a file holding its folder), if any."""
    marker = os.path.join(data_root, "VQVAE_READY")
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as fh:
            folder = fh.read().strip()
        if folder and not os.path.isabs(folder):
            folder = os.path.join(os.path.dirname(os.path.abspath(data_root)), folder)
        return folder or None
    return None


def write_sample_rollout(run_dir: str, step: int, model: VectorField, path: FlowPath, clip: torch.Tensor,
                         sample_steps: int) -> str | None:
    """Roll out a validation clip from its first frame, decode through the run's VQVAE and write
    ``samples/step_<NNNNNN>.gif``: ground truth (left) beside prediction (right). Returns the path or None
    when the run folder has no VQVAE to decode with."""
    if not all(os.path.isfile(os.path.join(run_dir, name)) for name in VQVAE_FILES):
        return None
    from smokeflow.data.video_io import write_video
    from smokeflow.pipeline import SmokeFlow

    pipe = SmokeFlow.from_pretrained(run_dir, device="cpu")
    latents = rollout(model, path, clip[:1], clip.shape[0] - 1, steps=sample_steps, warm_start=0.1,
                      seed=step).latents[0]
    truth = pipe.decode(clip.cpu())
    pred = np.concatenate([truth[:1], pipe.decode(latents.cpu())])
    gap = np.zeros((truth.shape[0], truth.shape[1], 2, 3), np.uint8)
    os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)
    out = os.path.join(run_dir, "samples", f"step_{step:06d}.gif")
    write_video(out, np.concatenate([truth, gap, pred], axis=2), fps=4)
    return out


def background_latent(vqvae_folder: str | None) -> torch.Tensor | None:
    """Normalised latent of an all-black 64x64 frame [C, h, w], or None without a VQVAE (the loss then
    falls back to the per-batch median latent, which is background since smoke covers 1-25 % of pixels)."""
    if not vqvae_folder or not all(os.path.isfile(os.path.join(vqvae_folder, n)) for n in VQVAE_FILES):
        return None
    from smokeflow.pipeline import SmokeFlow

    pipe = SmokeFlow.from_pretrained(vqvae_folder, device="cpu")
    return torch.as_tensor(pipe.encode(np.zeros((1, 64, 64, 3), np.uint8)))[0].float()


def _gather_floats(value: float, world_size: int) -> list[float]:
    """One float from every rank, in rank order (all ranks must call this together)."""
    gathered = [None] * world_size
    torch.distributed.all_gather_object(gathered, float(value))
    return [float(v) for v in gathered]


def _all_ranks_agree(flag: bool, world_size: int) -> bool:
    """True when ``flag`` is true on any rank (so all ranks stop together)."""
    if world_size == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


# --- the loop -------------------------------------------------------------------------------------------------
def train_flow(run_dir: str, config: dict, data_root: str, seed: int = 0, device: str = "cpu",
               max_steps: int | None = None, resume: bool = False, vqvae_checkpoint: str | None = None,
               use_wandb: bool = False, show_progress: bool = True, stop_after_step: int | None = None,
               max_minutes: float | None = None, init_from: str | None = None) -> dict:
    """Train (or resume) the flow model into ``run_dir``. ``config`` holds all sections (data, flow,
    flow_training); ``data_root`` the dataset whose latent cache is read. Returns the last logged metrics.

    ``stop_after_step`` ends the process right after that step (and its checkpoint, if one is due) as if it
    had been killed there: the schedule still runs to ``max_steps`` when resumed. ``max_minutes`` stops
    (after a checkpoint) once that much wall time has passed in this process; --resume continues.
    ``init_from``: a folder whose flow.safetensors initialises the network (fine-tuning; fresh optimiser and
    schedule), e.g. a model pre-trained on the latents of an earlier VQVAE.
    """
    started = time.perf_counter()
    from tqdm import tqdm

    from smokeflow.data.latent_cache import LatentClipDataset
    from smokeflow.data.smoke_velocity import record_motion_prior
    from smokeflow.data.preloaded_latents import PreloadedLatentClips

    ctx = init_distributed(device)
    rank, world_size, device, is_main = ctx.rank, ctx.world_size, ctx.device, ctx.is_main

    flow_config = FlowConfig.from_section(config.get("flow"))
    train_config = FlowTrainingConfig.from_section(config.get("flow_training"))
    if max_steps is not None:
        train_config.max_steps = int(max_steps)
    data = config.get("data", {})
    frames_per_sample = int(data.get("frames_per_sample", 10))
    skip_frames = int(data.get("skip_frames", 0))
    flip = bool(data.get("random_horizontal_flip", False))
    if vqvae_checkpoint is None and not resume:
        vqvae_checkpoint = find_vqvae_checkpoint(data_root)
    if is_main and not resume:
        config = {**config, "flow_training": dataclasses.asdict(train_config)}
        prepare_run_folder(run_dir, config, vqvae_checkpoint)
        # The training data's mean smoke velocity: the advected warm start's guess from a single frame.
        record_motion_prior(run_dir, data_root)
    barrier(ctx)

    # Every window of every video is an item; which flip an item gets depends on (seed, epoch, index) and
    # the epoch is set to the step, so clips and flips are reproducible per step (exact resume).
    train_set = LatentClipDataset(data_root, "train", frames_per_sample, skip_frames=skip_frames,
                                  random_horizontal_flip=flip, windows="all", seed=seed)
    val_set = LatentClipDataset(data_root, "val", frames_per_sample, skip_frames=skip_frames,
                                random_horizontal_flip=False, windows="all", seed=seed)
    if len(train_set) == 0:
        raise DataError(data_root, "the latent cache has no training clips")
    first = torch.as_tensor(train_set[0])
    expected = (flow_config.vector_field_regressor.state_size, *flow_config.vector_field_regressor.state_res)
    if tuple(first.shape[1:]) != expected:
        raise ConfigError(f"latents of {data_root} are {tuple(first.shape[1:])} but the flow config expects "
                          f"{expected} (state_size, state_res)")
    # Preloaded only once the latents are known to fit the network (a wrong config fails before GBs move).
    preload = train_config.preload_latents
    if preload == "auto":
        # On CUDA, when the cache takes at most half of the free GPU memory (the rest is the training's).
        cache_bytes = train_set.stored_array().nbytes * (2 if flip else 1)
        preload = device.type == "cuda" and cache_bytes <= 0.5 * torch.cuda.mem_get_info(device)[0]
    train_batches = PreloadedLatentClips(train_set, device) if preload else None

    torch.manual_seed(seed)
    model = build_vector_field(flow_config).to(device)
    if init_from and not resume:
        from smokeflow.flow.predictor import load_flow_weights

        load_flow_weights(model, os.path.join(init_from, FLOW_WEIGHTS), may_lack_new_inputs=True)
    path = FlowPath(flow_config.sigma)
    ema = EMA(model, train_config.ema_decay) if train_config.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.learning_rate,
                                  betas=tuple(train_config.betas), weight_decay=train_config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, train_config))
    start_step = 0
    state_path = os.path.join(run_dir, TRAIN_STATE)
    if resume:
        state = load_train_state(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        start_step = int(state["step"])
    train_model = model
    if world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    background = background_latent(run_dir if os.path.isfile(os.path.join(run_dir, VQVAE_FILES[0])) else None)
    if is_main and resume:
        truncate_after_step(run_dir, start_step)
    if use_wandb:
        os.environ.setdefault("WANDB_MODE", "offline")  # works without network; `wandb sync` uploads later
    logger = RunLogger(run_dir, enabled=is_main, use_wandb=use_wandb, project="smokeflow",
                       run_name=os.path.basename(os.path.normpath(run_dir)), config=config)
    logger.note(start_step, f"arithmetic: {describe_precision(device, train_config.precision)}")
    val_gen = torch.Generator().manual_seed(1234)
    val_indices = torch.randint(0, max(1, len(val_set)), (train_config.val_batches, train_config.batch_size),
                                generator=val_gen).tolist() if len(val_set) else []

    def save(step):
        if not is_main:
            return
        weights = ema.shadow if ema is not None else model.state_dict()
        save_weights(weights, os.path.join(run_dir, FLOW_WEIGHTS))
        save_train_state(state_path, {
            "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "rng": rng_state(), "world_size": world_size, "seed": seed})

    # Validation measures RIVER's plain loss whatever the options, so runs with and without them compare.
    val_config = dataclasses.replace(train_config, smoke_weight=1.0, condition_noise=0.0,
                                     reference_as_context_prob=0.0, rollout_reference_prob=0.0,
                                     warm_start_path_prob=0.0, loss_time_power=0.0,
                                     change_weight=1.0)

    @torch.no_grad()
    def validation_loss(weights: dict | None) -> float:
        if not val_indices:
            return float("nan")
        eval_model = model
        if weights is not None:
            eval_model = build_vector_field(flow_config).to(device)
            eval_model.load_state_dict(weights)
        eval_model.eval()
        losses = [training_loss(eval_model, path, load_batch(val_set, idx, device), val_config,
                                torch.Generator().manual_seed(99 + i), background).item()
                  for i, idx in enumerate(val_indices)]
        model.train()
        return float(np.mean(losses))

    last = {}
    bar = tqdm(total=train_config.max_steps, initial=start_step, desc="train flow", disable=not (
        is_main and show_progress), dynamic_ncols=True)
    window_start, window_loss, window_steps = time.perf_counter(), 0.0, 0
    model.train()
    done = start_step
    for step in range(start_step, train_config.max_steps):
        # Every draw of this step comes from (seed, step, rank): exact resume, different data per rank.
        draw = step_generator(seed, step, rank, 0)
        indices = torch.randint(0, len(train_set), (train_config.batch_size,), generator=draw).tolist()
        train_set.set_epoch(step)
        clips = train_batches.batch(indices) if train_batches else load_batch(train_set, indices, device)
        loss = training_loss(train_model, path, clips, train_config, step_generator(seed, step, rank, 1),
                             background)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        done = step + 1
        # Summed on the device and read at log time: a per-step .item() makes the host wait for the GPU.
        window_loss = window_loss + loss.detach().float()
        window_steps += 1
        bar.update(1)
        if done % train_config.log_every == 0 or done == train_config.max_steps:
            elapsed = time.perf_counter() - window_start
            mean_loss = float(window_loss) / window_steps
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            last = {"train_loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                    "steps_per_s": window_steps / max(elapsed, 1e-9), "grad_norm": float(grad_norm)}
            if world_size > 1:
                # What each rank trained on in this step (sum of its clips): ranks must see different data.
                last["rank_batch_sums"] = _gather_floats(float(clips.double().sum()), world_size)
            logger.log(done, last, kind="train")
            if done % train_config.val_every == 0 or done == train_config.max_steps:
                val = {"val_loss": validation_loss(None)}
                if ema is not None:
                    val["val_loss_ema"] = validation_loss(ema.shadow)
                logger.log(done, val, kind="val")
                last.update(val)
            window_start, window_loss, window_steps = time.perf_counter(), 0.0, 0
        if done % train_config.checkpoint_every == 0 or done == train_config.max_steps:
            save(done)
        if is_main and (done % train_config.sample_every == 0 or done == train_config.max_steps) and len(val_set):
            sampler_model = model
            if ema is not None:
                sampler_model = build_vector_field(flow_config).to(device)
                sampler_model.load_state_dict(ema.shadow)
            write_sample_rollout(run_dir, done, sampler_model, path,
                                 val_set.video_latents(0)[:frames_per_sample].to(device), train_config.sample_steps)
            model.train()
        if stop_after_step is not None and done >= stop_after_step:
            break
        if max_minutes is not None and _all_ranks_agree(time.perf_counter() - started > 60 * max_minutes,
                                                         world_size):
            if done % train_config.checkpoint_every:
                save(done)
            if is_main:
                print(f"smokeflow train: stopped after {max_minutes} minutes at step {done} (resume with --resume)")
            break
    bar.close()
    if world_size > 1:
        # DDP keeps replicas equal; record each rank's weight checksum so that is checked, not assumed.
        checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
        logger.log(done, {"rank_weight_checksums": _gather_floats(checksum, world_size)}, kind="ddp")
    logger.close()
    barrier(ctx)
    cleanup_distributed()
    return last
