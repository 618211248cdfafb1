"""Train the VQVAE: one readable loop from config to checkpoint (``smokeflow train-vqvae``).

Data: every frame of the training split is one sample (:class:`~smokeflow.data.clip_dataset.ClipDataset`
with ``frames_per_sample=1`` and ``windows="all"``), shuffled, flipped left-right at random.

Loss (all terms on the [-1, 1] scale):

    w        = 1 + smoke_weight * dilate(smoke_mask(x))        # smoke pixels (and their rim) count more
    L_rec    = l1_weight * sum(w |x̂-x|) / sum(w) + l2_weight * sum(w (x̂-x)²) / sum(w)
    L        = L_rec + commitment_weight * |z - sg(q)|² + lpips_weight * LPIPS(x̂, x)   (LPIPS if available)

Smoke covers 1-25 % of a frame, so an unweighted loss is dominated by the black background and the
model learns "everything is black". The L1 term keeps pushing background errors to exactly zero, which the
decoder's straight-through clamp makes reachable (see :mod:`smokeflow.models.vqvae`).

The codebook is updated by EMA inside the quantiser (not by the optimiser). The learning rate follows a
linear warm-up then cosine decay over the training *progress* = max(step / max_steps,
train_time / max_minutes), so a time-limited run on a shared CPU still anneals properly.

Checkpoints (``runs/<name>/``): weights + ``train_state.pt`` every ``checkpoint_every_minutes`` and at the
end, written atomically; ``--resume`` continues from the last one (model, codebook, optimiser, step, RNG).
At the end the per-channel latent statistics over the training split are saved to
``latent_stats.safetensors``.

Decoder fine-tuning (``init_from`` + ``finetune_decoder``): starts from another checkpoint folder's weights
and trains only the decoder on the quantised codes (the path ``SmokeFlow.decode`` uses by default). The
encoder and the quantiser stay frozen (no gradients, eval mode: no EMA codebook updates, no dead-code
restarts) and the source's ``latent_stats.safetensors`` is copied unchanged, so latents encoded with the
source checkpoint (a latent cache, a flow model trained on them) stay valid for the fine-tuned one.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from smokeflow.config import load_config, save_config, section_to_dataclass
from smokeflow.data.clip_dataset import ClipDataset
from smokeflow.data.smoke_mask import smoke_mask
from smokeflow.errors import CheckpointError, ConfigError, SmokeflowError
from smokeflow.models.patch_discriminator import (PatchDiscriminator, discriminator_hinge_loss,
                                                  generator_adversarial_loss)
from smokeflow.models.vqvae import VQVAE, LatentNormalizer, RunningChannelStats, VQVAEConfig
from smokeflow.training import checkpoint_io as ckio
from smokeflow.training.distributed import (DistributedContext, all_reduce_mean, barrier, broadcast_from_main,
                                            cleanup_distributed, init_distributed)
from smokeflow.training.precision import check_precision, describe_precision, uses_bf16
from smokeflow.training.run_logger import RunLogger, truncate_after_step


@dataclass
class VQVAETrainingConfig:
    """Config section ``vqvae_training``."""

    batch_size: int = 32                 # frames per step (per process under DDP)
    learning_rate: float = 5e-4
    min_lr_ratio: float = 0.1            # cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 200
    weight_decay: float = 0.0
    max_steps: int = 4000
    max_minutes: float = 0.0             # 0 = no time limit; else stop (and anneal) by wall time
    grad_clip: float = 1.0
    smoke_weight: float = 4.0            # extra loss weight of smoke pixels
    smoke_dilation: int = 1              # pixels of smoke-mask dilation (plume rims count as smoke)
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    # Smoke-weighted L1 on the image's finite differences (its edges). L1 and L2 on pixels are minimised by the
    # average of the plumes a code could stand for, which is a blurred one; this term pays for edges where the
    # target has them. 0 (off) is the loss the shipped autoencoder was first trained with.
    gradient_weight: float = 0.0
    # Weight of the patch discriminator's hinge loss for the decoder (smokeflow.models.patch_discriminator): pays
    # for plausible filaments where L1/L2 draw the blurred average. 0 = off (no discriminator is built). Meant
    # for --finetune-decoder, so the latents the flow model was trained on stay as they are.
    adversarial_weight: float = 0.0
    discriminator_width: int = 32
    discriminator_lr_ratio: float = 2.0  # the discriminator's learning rate over the decoder's
    commitment_weight: float = 0.25
    lpips_weight: float = 0.1            # used only when LPIPS backbone weights are present
    lpips_weights_path: str | None = None
    checkpoint_every_minutes: float = 3.0
    log_every: int = 10
    val_every: int = 250
    val_frames: int = 256
    stats_max_frames: int = 8000         # frames of the training split used for the latent statistics
    num_workers: int = 0
    seed: int = 0
    # Set by --init-from / --finetune-decoder and kept in the run's config.yaml, so --resume knows the mode.
    init_from: str | None = None         # checkpoint folder whose vqvae.safetensors starts the run
    finetune_decoder: bool = False       # train the decoder only; encoder, codebook, latent stats frozen
    precision: str = "auto"              # auto / fp32 / bf16 (smokeflow.training.precision)

    def __post_init__(self):
        self.precision = check_precision(self.precision)


@dataclass
class TrainResult:
    run_dir: str
    step: int
    seconds: float
    final_metrics: dict[str, float]


# ------------------------------------------------------------------------------------------ losses
def reconstruction_weights(x: torch.Tensor, smoke_weight: float, dilation: int) -> torch.Tensor:
    """Per-pixel loss weights [B,1,H,W] = 1 + smoke_weight * (dilated smoke mask of target x [B,3,H,W])."""
    mask = smoke_mask(x).unsqueeze(1).float()
    if dilation > 0:
        mask = F.max_pool2d(mask, 2 * dilation + 1, stride=1, padding=dilation)
    return 1.0 + smoke_weight * mask


def gradient_loss(recon: torch.Tensor, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted L1 between the horizontal and vertical finite differences of recon and x ([B,3,H,W] in [-1,1];
    weights [B,1,H,W], each difference weighted by the larger weight of its two pixels, so a plume's rim
    counts as smoke). A float32 scalar; 0 when recon equals x."""
    total, norm = recon.new_zeros(()), recon.new_zeros(())
    for dim in (2, 3):
        grad_error = (recon.diff(dim=dim) - x.diff(dim=dim)).abs()
        pair_weights = torch.maximum(weights.narrow(dim, 0, weights.shape[dim] - 1),
                                     weights.narrow(dim, 1, weights.shape[dim] - 1))
        total = total + (pair_weights * grad_error).sum()
        norm = norm + pair_weights.sum() * x.shape[1]
    return total / norm


def vqvae_loss(model_out, x: torch.Tensor, cfg: VQVAETrainingConfig, lpips_model=None) -> dict[str, torch.Tensor]:
    """All loss terms (float32 scalars) and their weighted sum under key ``loss``."""
    recon = model_out.reconstruction.float()
    weights = reconstruction_weights(x, cfg.smoke_weight, cfg.smoke_dilation)
    err = recon - x
    norm = weights.sum() * x.shape[1]
    l1 = (weights * err.abs()).sum() / norm
    l2 = (weights * err.square()).sum() / norm
    commitment = model_out.quantizer.commitment_loss
    terms = {"l1": l1, "l2": l2, "commitment": commitment}
    loss = cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.commitment_weight * commitment
    if cfg.gradient_weight > 0:
        terms["gradient"] = gradient_loss(recon, x, weights)
        loss = loss + cfg.gradient_weight * terms["gradient"]
    if lpips_model is not None and cfg.lpips_weight > 0:
        perceptual = lpips_model(recon, x).mean()
        terms["lpips"] = perceptual
        loss = loss + cfg.lpips_weight * perceptual
    terms["loss"] = loss
    return terms


def discriminator_resume_notes(wanted: bool, saved: bool, run_dir: str) -> list[str]:
    """What resuming does to the adversarial game when the config and the saved train state disagree: a
    discriminator asked for that the run never had starts fresh; one the run had but the config no longer asks
    for is left out of the next checkpoint. Both are said, not done silently."""
    if wanted and not saved:
        return [f"{run_dir}: the run had no discriminator (adversarial_weight was 0); a fresh one starts now"]
    if saved and not wanted:
        return [f"{run_dir}: adversarial_weight is 0 now, so the run's discriminator is not used, and the next "
                "checkpoint will not keep it"]
    return []


def adversarial_step(reconstruction: torch.Tensor, x: torch.Tensor, cfg: VQVAETrainingConfig, train_discriminator,
                     discriminator: PatchDiscriminator, discriminator_optimizer, use_autocast: bool
                     ) -> dict[str, torch.Tensor]:
    """One step of the patch discriminator on real frames x and the detached reconstruction ([B,3,H,W] in
    [-1,1]), then the decoder's adversarial loss against the updated discriminator. -> {"discriminator": its hinge
    loss (detached), "adversarial": the decoder's term, differentiable in ``reconstruction``}.

    train_discriminator is the module to train (DDP-wrapped under torchrun); the decoder's term goes through the
    bare ``discriminator``, so its gradients reach the decoder but are never all-reduced into the discriminator's
    (the next discriminator step zeroes them).
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_autocast):
        logits = train_discriminator(torch.cat([x, reconstruction.detach()]))
    real_logits, fake_logits = logits.chunk(2)
    discriminator_loss = discriminator_hinge_loss(real_logits, fake_logits)
    discriminator_optimizer.zero_grad(set_to_none=True)
    discriminator_loss.backward()
    torch.nn.utils.clip_grad_norm_(discriminator.parameters(), cfg.grad_clip)
    discriminator_optimizer.step()
    # A true clamp, not the decoder's straight-through one: pixels drawn at exactly black get no push from the
    # discriminator. Through the straight-through clamp its gradient reached the raw values under the black
    # background, which drifted up into a grey haze (measured: val PSNR 34.6 -> 27 dB in 400 steps).
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_autocast):
        adversarial = generator_adversarial_loss(discriminator(reconstruction.clamp(-1, 1)))
    return {"discriminator": discriminator_loss.detach(), "adversarial": adversarial}


def learning_rate_at(progress: float, step: int, cfg: VQVAETrainingConfig) -> float:
    """Linear warm-up over ``warmup_steps`` then cosine from learning_rate to learning_rate*min_lr_ratio."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.learning_rate * warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


# --------------------------------------------------------------------------------------- helpers
def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [B,3,H,W] in [-1,1] -> uint8 numpy [B,H,W,3]."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def load_training_config(config_path: str | os.PathLike) -> tuple[dict[str, Any], VQVAEConfig, VQVAETrainingConfig]:
    config = load_config(config_path)
    model_cfg = section_to_dataclass(VQVAEConfig, config.get("vqvae"), "vqvae")
    train_cfg = section_to_dataclass(VQVAETrainingConfig, config.get("vqvae_training"), "vqvae_training")
    input_size = (config.get("data") or {}).get("input_size")
    if input_size is not None and int(input_size) != model_cfg.input_size:
        raise ConfigError(f"{config_path}: data.input_size {input_size} differs from vqvae.input_size "
                          f"{model_cfg.input_size}")
    return config, model_cfg, train_cfg


def _frame_loader(dataset: ClipDataset, batch_size: int, ctx: DistributedContext, seed: int, num_workers: int):
    """Endless iterator of frame batches [B,3,H,W]; under DDP each rank sees a disjoint shard per epoch."""
    sampler = None
    if ctx.is_distributed:
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                                      shuffle=True, seed=seed, drop_last=True)
    generator = torch.Generator().manual_seed(seed + 7919 * ctx.rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None,
                                         sampler=sampler, drop_last=len(dataset) >= batch_size * max(1, ctx.world_size),
                                         num_workers=num_workers, generator=generator,
                                         persistent_workers=num_workers > 0)
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for clip in loader:
            yield clip[:, 0]  # [B,1,3,H,W] -> [B,3,H,W]
        epoch += 1


def _fixed_frames(root: str, split: str, count: int, size: int) -> torch.Tensor | None:
    """Up to ``count`` frames spread evenly over a split (for validation), or None if the split is absent."""
    try:
        dataset = ClipDataset(root, split, frames_per_sample=1, windows="all", size=size)
    except SmokeflowError:
        return None
    picks = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
    return torch.stack([dataset[int(i)][0] for i in np.unique(picks)])


@torch.no_grad()
def evaluate_frames(model: VQVAE, frames: torch.Tensor, device: torch.device, batch_size: int = 128) -> dict[str, float]:
    """Quantised-path reconstruction metrics on frames [N,3,H,W]: PSNR, smoke PSNR, SSIM, background level,
    codebook usage. Uses smokeflow.metrics.frame_metrics (the same numbers inspection reports)."""
    from smokeflow.metrics.frame_metrics import psnr, psnr_smoke, ssim
    from smokeflow.metrics.smoke_stats import smoke_sharpness

    was_training = model.training
    model.eval()
    originals, recons, codes = [], [], []
    for start in range(0, frames.shape[0], batch_size):
        x = frames[start:start + batch_size].to(device)
        z = model.encode(x)
        _, idx = model.quantize(z)
        recons.append(to_uint8(model.decode(z, quantize=True)))
        originals.append(to_uint8(x))
        codes.append(idx.flatten().cpu())
    model.train(was_training)
    original = np.concatenate(originals)
    recon = np.concatenate(recons)
    background = ~smoke_mask(original)
    used = torch.unique(torch.cat(codes)).numel()
    return {"psnr": float(np.mean(psnr(recon, original))),
            "psnr_smoke": float(np.nanmean(psnr_smoke(recon, original))),
            "ssim": float(np.mean(ssim(recon, original))),
            # RMS intensity gradient over smoke pixels (0-255 per px): how much of the originals' sharpness survives.
            "sharpness": float(np.nanmean(smoke_sharpness(recon))),
            "sharpness_original": float(np.nanmean(smoke_sharpness(original))),
            "background_mean": float(recon[background].mean()) if background.any() else 0.0,
            "codes_used": int(used)}


@torch.no_grad()
def compute_latent_statistics(model: VQVAE, dataset: ClipDataset, device: torch.device, max_frames: int,
                              ctx: DistributedContext | None = None, batch_size: int = 128,
                              progress: bool = True) -> LatentNormalizer:
    """Per-channel mean/std of the continuous latents over (up to ``max_frames`` evenly spaced) frames of
    ``dataset`` (frames_per_sample=1). Under DDP each rank encodes a share and the sums are all-reduced."""
    ctx = ctx or DistributedContext(device=device)
    model.eval()
    picks = np.unique(np.linspace(0, len(dataset) - 1, num=min(max_frames, len(dataset))).round().astype(int))
    picks = picks[ctx.rank::ctx.world_size]
    stats = RunningChannelStats(model.config.latent_channels)
    batches = range(0, len(picks), batch_size)
    for start in tqdm(batches, desc="latent statistics", unit="batch", disable=not (progress and ctx.is_main)):
        x = torch.stack([dataset[int(i)][0] for i in picks[start:start + batch_size]]).to(device)
        stats.update(model.encode(x).float())
    if ctx.is_distributed:
        import torch.distributed as dist

        packed = torch.cat([torch.tensor([float(stats.count)], dtype=torch.float64), stats.sum, stats.sum_sq])
        dist.all_reduce(packed)
        channels = stats.sum.numel()
        stats.count = int(packed[0].item())
        stats.sum, stats.sum_sq = packed[1:1 + channels], packed[1 + channels:]
    mean, std = stats.result()
    return LatentNormalizer(mean, std)


def save_latent_stats(normalizer: LatentNormalizer, path: str | os.PathLike, num_frames: int | None = None) -> str:
    metadata = {"description": "per-channel mean/std of VQVAE pre-quantisation latents on the training split"}
    if num_frames is not None:
        metadata["num_frames"] = str(num_frames)
    return ckio.save_weights({"mean": normalizer.mean, "std": normalizer.std}, path, metadata=metadata)


def load_latent_stats(path: str | os.PathLike) -> LatentNormalizer:
    state = ckio.load_weights(path)
    if "mean" not in state or "std" not in state or state["mean"].shape != state["std"].shape:
        raise CheckpointError(path, "latent statistics need tensors 'mean' and 'std' of equal shape [C]")
    return LatentNormalizer(state["mean"], state["std"])


# --------------------------------------------------------------------------------------- training
FROZEN_PREFIXES = ("encoder.", "quantizer.")  # state-dict keys a decoder fine-tune must leave bit-identical


def freeze_encoder_and_quantizer(model: VQVAE) -> None:
    """No gradients for the encoder, eval mode for encoder and quantiser (the EMA codebook update and the
    dead-code restarts only run in training mode). Call again after anything that sets ``model.train()``."""
    model.encoder.requires_grad_(False)
    model.encoder.eval()
    model.quantizer.eval()


def check_frozen_unchanged(model: VQVAE, source_weights: str) -> None:
    """Raise CheckpointError if any encoder/quantiser tensor of ``model`` differs from ``source_weights``."""
    source = ckio.load_weights(source_weights)
    own = model.state_dict()
    changed = [k for k in own if k.startswith(FROZEN_PREFIXES)
               and not torch.equal(own[k].detach().cpu(), source[k].to(own[k].dtype))]
    if changed:
        raise CheckpointError(source_weights, f"decoder fine-tune changed frozen tensors {changed[:5]}")


def _save_checkpoint(run_dir: str, model: VQVAE, optimizer, step: int, train_seconds: float,
                     discriminator=None, discriminator_optimizer=None) -> None:
    ckio.save_weights(model.state_dict(), os.path.join(run_dir, ckio.VQVAE_WEIGHTS), metadata={"step": str(step)})
    state = {"step": step, "train_seconds": train_seconds, "optimizer": optimizer.state_dict(),
             "rng": ckio.rng_state()}
    if discriminator is not None:  # the adversarial game resumes where it stopped, not against a new judge
        state["discriminator"] = discriminator.state_dict()
        state["discriminator_optimizer"] = discriminator_optimizer.state_dict()
    ckio.save_train_state(os.path.join(run_dir, ckio.TRAIN_STATE), state)


def train_vqvae(config_path: str | os.PathLike, run_name: str, runs_dir: str = "runs", device: str | None = None,
                resume: bool = False, max_steps: int | None = None, data_path: str | None = None,
                max_minutes: float | None = None, use_wandb: bool = False, progress: bool = True,
                lpips_weights: str | None = None, init_from: str | None = None,
                finetune_decoder: bool = False, precision: str | None = None) -> TrainResult:
    """Train (or resume) a VQVAE run in ``runs_dir/run_name``. Works in one process or under torchrun.

    init_from: checkpoint folder (``vqvae.safetensors``) to start a new run from. finetune_decoder: train
    only the decoder of ``init_from`` (see the module docstring). A resumed run keeps the mode stored in its
    config.yaml, which ``config_path`` should then be. precision: overrides ``vqvae_training.precision``.
    """
    config, model_cfg, cfg = load_training_config(config_path)
    run_dir = os.path.join(os.fspath(runs_dir), run_name)
    stored_config = os.path.join(run_dir, ckio.CONFIG_FILE)
    if resume and os.path.isfile(stored_config):
        # A resumed fine-tune stays a fine-tune even when --config is the original config file.
        stored = (load_config(stored_config).get("vqvae_training") or {})
        cfg.init_from = cfg.init_from or stored.get("init_from")
        cfg.finetune_decoder = cfg.finetune_decoder or bool(stored.get("finetune_decoder"))
    if init_from is not None:
        cfg.init_from = os.fspath(init_from)
    if finetune_decoder:
        cfg.finetune_decoder = True
    if cfg.finetune_decoder and not cfg.init_from:
        raise ConfigError(f"{config_path}: decoder fine-tuning needs a source checkpoint (--init-from)")
    if cfg.init_from and not os.path.isfile(os.path.join(cfg.init_from, ckio.VQVAE_WEIGHTS)):
        raise CheckpointError(os.path.join(cfg.init_from, ckio.VQVAE_WEIGHTS), "--init-from: weights file not found")
    if cfg.finetune_decoder and not os.path.isfile(os.path.join(cfg.init_from, ckio.LATENT_STATS)):
        raise CheckpointError(os.path.join(cfg.init_from, ckio.LATENT_STATS),
                              "decoder fine-tuning keeps the source's latent statistics, but they are missing")
    if max_steps is not None:
        cfg.max_steps = int(max_steps)
    if max_minutes is not None:
        cfg.max_minutes = float(max_minutes)
    if lpips_weights is not None:
        cfg.lpips_weights_path = lpips_weights
    if precision is not None:
        cfg.precision = check_precision(precision)
    data_root = data_path or (config.get("data") or {}).get("data_path")
    if not data_root:
        raise ConfigError(f"{config_path}: no data.data_path and no --data given")
    config.setdefault("data", {})["data_path"] = os.fspath(data_root)
    config["vqvae"] = model_cfg.to_dict()
    config["vqvae_training"] = asdict(cfg)
    ctx = init_distributed(device)
    state_path = os.path.join(run_dir, ckio.TRAIN_STATE)
    try:
        if os.path.exists(state_path) and not resume:
            raise SmokeflowError(f"{run_dir}: run already exists; pass --resume to continue it or choose another "
                                 "--run-name")
        if resume and not os.path.exists(state_path):
            raise CheckpointError(state_path, "nothing to resume: no training state in this run folder")
        return _train(config, model_cfg, cfg, ctx, run_dir, data_root, resume, use_wandb, progress)
    finally:
        cleanup_distributed()


def _train(config, model_cfg: VQVAEConfig, cfg: VQVAETrainingConfig, ctx: DistributedContext, run_dir: str,
           data_root: str, resume: bool, use_wandb: bool, progress: bool) -> TrainResult:
    torch.manual_seed(cfg.seed + ctx.rank)
    np.random.seed(cfg.seed + ctx.rank)
    device = ctx.device
    dataset = ClipDataset(data_root, "train", frames_per_sample=1, random_horizontal_flip=True,
                          size=model_cfg.input_size, windows="all", seed=cfg.seed)
    model = VQVAE(model_cfg).to(device)
    if cfg.init_from and not resume:
        ckio.load_state_into(model, os.path.join(cfg.init_from, ckio.VQVAE_WEIGHTS), device)
    if cfg.finetune_decoder:
        freeze_encoder_and_quantizer(model)
    trained = model.decoder.parameters() if cfg.finetune_decoder else model.parameters()
    # With a discriminator the decoder's gradient moves as the discriminator learns: the usual GAN betas.
    betas = (0.5, 0.9) if cfg.adversarial_weight > 0 else (0.9, 0.999)
    optimizer = torch.optim.AdamW(trained, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=betas)
    discriminator = discriminator_optimizer = None
    if cfg.adversarial_weight > 0:
        discriminator = PatchDiscriminator(cfg.discriminator_width).to(device)
        # beta1 0.5: the usual choice for both players of a GAN, whose targets move every step.
        discriminator_optimizer = torch.optim.AdamW(discriminator.parameters(), betas=(0.5, 0.9),
                                                    lr=cfg.learning_rate * cfg.discriminator_lr_ratio)
    step, train_seconds = 0, 0.0
    resume_notes = []
    if resume:
        ckio.load_state_into(model, os.path.join(run_dir, ckio.VQVAE_WEIGHTS), device)
        state = ckio.load_train_state(os.path.join(run_dir, ckio.TRAIN_STATE))
        optimizer.load_state_dict(state["optimizer"])
        if discriminator is not None and "discriminator" in state:
            discriminator.load_state_dict(state["discriminator"])
            discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        resume_notes = discriminator_resume_notes(discriminator is not None, "discriminator" in state, run_dir)
        step, train_seconds = int(state["step"]), float(state["train_seconds"])
        ckio.set_rng_state(state["rng"])
        if ctx.rank:
            torch.manual_seed(cfg.seed + ctx.rank + step)
    if ctx.is_main:
        os.makedirs(run_dir, exist_ok=True)
        save_config(config, os.path.join(run_dir, ckio.CONFIG_FILE))
        if resume:
            truncate_after_step(run_dir, step)
        if cfg.finetune_decoder:
            # The latents are the source's, so are their statistics: copied byte for byte, never re-measured.
            shutil.copyfile(os.path.join(cfg.init_from, ckio.LATENT_STATS), os.path.join(run_dir, ckio.LATENT_STATS))
    barrier(ctx)
    logger = RunLogger(run_dir, enabled=ctx.is_main, use_wandb=use_wandb, config=config)
    for note in resume_notes:
        logger.note(step, note)
        if ctx.is_main:
            tqdm.write(f"note: {note}")

    lpips_model = None
    if cfg.lpips_weight > 0:
        from smokeflow.metrics.lpips_metric import load_lpips

        availability = load_lpips(cfg.lpips_weights_path, device=device)
        if availability.available and availability.reference_weights:
            lpips_model = availability.model
            logger.note(step, f"LPIPS loss term on (weight {cfg.lpips_weight})")
        else:
            reason = availability.reason or "backbone weights are not the reference AlexNet"
            logger.note(step, f"LPIPS loss term skipped: {reason}")
            if ctx.is_main:
                tqdm.write(f"note: LPIPS loss term skipped: {reason}")

    train_model, train_discriminator = model, discriminator
    if ctx.is_distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        # Codebook buffers are kept identical by the quantiser's own all-reduce, so no buffer broadcast.
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
        if discriminator is not None:  # DDP copies rank 0's initial weights to every rank
            train_discriminator = torch.nn.parallel.DistributedDataParallel(discriminator, device_ids=device_ids)
    val_frames = _fixed_frames(data_root, "val", cfg.val_frames, model_cfg.input_size) if ctx.is_main else None
    batches = _frame_loader(dataset, cfg.batch_size, ctx, cfg.seed + step, cfg.num_workers)
    # bf16 autocast on CUDA and on CPUs with native bf16; on other CPUs it is about 2x slower than float32.
    use_autocast = uses_bf16(device, cfg.precision)
    logger.note(step, f"arithmetic: {describe_precision(device, cfg.precision)}")

    model.train()
    if cfg.finetune_decoder:
        logger.note(step, f"decoder fine-tune of {cfg.init_from}: encoder, codebook and latent stats frozen")
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train-vqvae", unit="step",
               disable=not (progress and ctx.is_main), dynamic_ncols=True)
    last_checkpoint = time.time()
    window_start, window_steps = time.time(), 0
    metrics: dict[str, float] = {}
    try:
        while step < cfg.max_steps:
            progress_frac = step / max(1, cfg.max_steps)
            if cfg.max_minutes > 0:
                train_seconds = broadcast_from_main(train_seconds, ctx)
                progress_frac = max(progress_frac, train_seconds / (cfg.max_minutes * 60))
                if progress_frac >= 1.0:
                    break
            lr = learning_rate_at(progress_frac, step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if discriminator_optimizer is not None:
                for group in discriminator_optimizer.param_groups:
                    group["lr"] = lr * cfg.discriminator_lr_ratio
            tic = time.time()
            x = next(batches).to(device, non_blocking=True)
            if cfg.finetune_decoder:
                freeze_encoder_and_quantizer(model)  # validation's model.train() would unfreeze the codebook
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
                out = train_model(x)
            terms = vqvae_loss(out, x, cfg, lpips_model)
            if discriminator is not None:
                terms.update(adversarial_step(out.reconstruction, x, cfg, train_discriminator, discriminator,
                                              discriminator_optimizer, use_autocast))
                terms["loss"] = terms["loss"] + cfg.adversarial_weight * terms["adversarial"]
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            train_seconds += time.time() - tic
            window_steps += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                reduced = {k: float(all_reduce_mean(v.detach().float(), ctx)) for k, v in terms.items()}
                elapsed = time.time() - window_start
                metrics = {**reduced, "lr": lr, "grad_norm": float(grad_norm),
                           "perplexity": float(out.quantizer.perplexity),
                           "restarted_codes": out.quantizer.num_restarted,
                           "steps_per_s": window_steps / max(elapsed, 1e-9), "train_seconds": train_seconds}
                window_start, window_steps = time.time(), 0
                logger.log(step, metrics)
                bar.set_postfix(loss=f"{reduced['loss']:.4f}", ppl=f"{metrics['perplexity']:.0f}")
            if val_frames is not None and (step % cfg.val_every == 0 or step == cfg.max_steps):
                val = evaluate_frames(model, val_frames, device)
                logger.log(step, val, kind="val")
                bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}", val_psnr=f"{val['psnr']:.1f}")
            # Only rank 0 writes and nobody waits for it: the next gradient all-reduce synchronises anyway.
            if ctx.is_main and time.time() - last_checkpoint >= cfg.checkpoint_every_minutes * 60:
                _save_checkpoint(run_dir, model, optimizer, step, train_seconds, discriminator,
                                 discriminator_optimizer)
                last_checkpoint = time.time()
    finally:
        bar.close()
    if ctx.is_main:
        _save_checkpoint(run_dir, model, optimizer, step, train_seconds, discriminator, discriminator_optimizer)
    final = {}
    if val_frames is not None:
        final = evaluate_frames(model, val_frames, device)
        logger.log(step, final, kind="val")
    if cfg.finetune_decoder:
        check_frozen_unchanged(model, os.path.join(cfg.init_from, ckio.VQVAE_WEIGHTS))
        barrier(ctx)
        logger.close()
        return TrainResult(run_dir, step, train_seconds, final)
    stats_dataset = ClipDataset(data_root, "train", frames_per_sample=1, size=model_cfg.input_size, windows="all")
    normalizer = compute_latent_statistics(model, stats_dataset, device, cfg.stats_max_frames, ctx,
                                           progress=progress)
    if ctx.is_main:
        save_latent_stats(normalizer, os.path.join(run_dir, ckio.LATENT_STATS),
                          num_frames=min(cfg.stats_max_frames, len(stats_dataset)))
        logger.log(step, {"latent_mean_abs": float(normalizer.mean.abs().mean()),
                          "latent_std_mean": float(normalizer.std.mean())}, kind="latent_stats")
    barrier(ctx)
    logger.close()
    return TrainResult(run_dir, step, train_seconds, final)
