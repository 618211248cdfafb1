"""Training of :class:`smokeflow.models.motion_net.MotionFieldNet`: one frame -> its smoke's velocity field.

Targets: for every consecutive pair (frame t, frame t+1) of the first ``max_videos`` videos of a split with
measurable smoke, the optical-flow field :func:`smokeflow.metrics.smoke_motion.motion_fields` (drift, rise in
px per frame, spread from the smoke over the frame). Input: frame t alone. Loss: mean squared error over the
pixels, with the smoke's pixels (where either frame has smoke) weighted ``smoke_weight`` times: the warm start
moves smoke, and the black far from it moves black onto black whatever its velocity. Left-right flips (drift
negated) double the data and keep the network from preferring one side.

Scored on a second split against the two guesses the sampler had before: zero motion and the training pairs'
mean velocity (the motion prior, one number for every pixel). Checkpoints: the network, its optimiser, the
step and the random state, written atomically every ``checkpoint_every`` steps into ``out`` (and removed once
the network is written); ``resume`` continues from them exactly.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from smokeflow.errors import CheckpointError, DataError
from smokeflow.models.motion_net import MotionFieldNet, frames_to_input, save_motion_net

STATE_FILE = "motion_net_state.pt"


@dataclass
class MotionTrainingConfig:
    """steps / batch_size / learning_rate: AdamW with 100 warm-up steps and cosine decay to a tenth;
    max_videos: videos per split read for pairs; frames_per_video: the first frames of each video read (users'
    videos can be thousands of frames long); smoke_weight: loss weight of smoke pixels (others 1)."""
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 16
    max_videos: int = 2000
    val_videos: int = 100
    frames_per_video: int = 20
    smoke_weight: float = 4.0
    checkpoint_every: int = 250
    seed: int = 0


def motion_pairs(data_root: str, split: str, max_videos: int, frames_per_video: int = 20, size: int = 64,
                 chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames uint8 [N, H, W, 3], targets float32 [N, 2, H, W] (drift, rise), smoke bool [N, H, W]) over the
    consecutive pairs of the first ``frames_per_video`` frames of the first ``max_videos`` videos of ``split``
    whose smoke could be measured. Raises DataError naming the dataset when there is no such pair."""
    from smokeflow.data.layouts import list_videos, read_video_entry
    from smokeflow.data.smoke_mask import smoke_mask
    from smokeflow.metrics.smoke_motion import motion_fields

    entries = [e for e in list_videos(data_root, split)[:max_videos] if e.num_frames >= 2]
    if not entries:
        raise DataError(data_root, f"split {split!r} has no video of 2 frames or more to learn motion from")
    befores, afters = [], []
    for entry in entries:
        clip = read_video_entry(entry, size=size, frame_indices=range(min(frames_per_video, entry.num_frames)))
        befores.append(clip[:-1])
        afters.append(clip[1:])
    before, after = np.concatenate(befores), np.concatenate(afters)
    frames, targets, smoke = [], [], []
    for i in range(0, len(before), chunk):
        b, a = before[i:i + chunk], after[i:i + chunk]
        drift, rise, measured = motion_fields(b, a)
        frames.append(b[measured])
        targets.append(np.stack([drift, rise], axis=1)[measured].astype(np.float32))
        smoke.append((smoke_mask(b) | smoke_mask(a))[measured])
    frames, targets, smoke = np.concatenate(frames), np.concatenate(targets), np.concatenate(smoke)
    if not len(frames):
        raise DataError(data_root, f"split {split!r} has no consecutive frames with smoke whose motion could be "
                                   "measured (all black, or no texture to follow)")
    return frames, targets, smoke


def weighted_field_error(predicted: torch.Tensor, target: torch.Tensor, smoke: torch.Tensor,
                         smoke_weight: float) -> torch.Tensor:
    """Mean squared error of fields [B, 2, H, W], pixels where ``smoke`` [B, H, W] weighted ``smoke_weight``."""
    weights = 1.0 + (smoke_weight - 1.0) * smoke.float()
    return ((predicted - target).pow(2).sum(1) * weights).sum() / (2 * weights.sum())


def _lr(step: int, config: MotionTrainingConfig) -> float:
    warmup = min(100, max(1, config.steps // 10))
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def score_fields(model: MotionFieldNet, frames: np.ndarray, targets: np.ndarray, smoke: np.ndarray,
                 prior: tuple[float, float], batch: int = 256) -> dict:
    """Root mean squared error (px per frame) on the smoke pixels of the network's fields, of the prior's one
    velocity everywhere and of zero motion; and the mean rise on smoke pixels, predicted and true."""
    from smokeflow.models.motion_net import predict_motion_fields

    sums = {"net": 0.0, "prior": 0.0, "zero": 0.0}
    count, rise_pred, rise_true = 0, 0.0, 0.0
    for i in range(0, len(frames), batch):
        drift, rise = predict_motion_fields(model, frames[i:i + batch])
        tgt, mask = targets[i:i + batch].astype(np.float64), smoke[i:i + batch]
        pred = np.stack([drift, rise], axis=1)
        constant = np.asarray(prior, dtype=np.float64)[None, :, None, None]
        for name, guess in (("net", pred), ("prior", constant), ("zero", 0.0)):
            sums[name] += float((((guess - tgt) ** 2).sum(1) * mask).sum())
        count += int(mask.sum())
        rise_pred += float((rise * mask).sum())
        rise_true += float((tgt[:, 1] * mask).sum())
    count = max(count, 1)
    return {**{f"rmse_{k}": math.sqrt(v / (2 * count)) for k, v in sums.items()},
            "rise_pred": rise_pred / count, "rise_true": rise_true / count, "pairs": int(len(frames))}


def _save_state(out: str, model, optimizer, step: int, generator: torch.Generator) -> None:
    from smokeflow.training.checkpoint_io import atomic_write

    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": torch.tensor(step),
             "rng": generator.get_state()}
    atomic_write(os.path.join(out, STATE_FILE), lambda tmp: torch.save(state, tmp))


def train_motion_net(data_root: str, out: str, config: MotionTrainingConfig, resume: bool = False,
                     progress=print) -> dict:
    """Train on ``data_root``'s train split, score on its val split (else on held-out train pairs), write the
    network into ``out`` (:func:`smokeflow.models.motion_net.save_motion_net`). Returns the scores."""
    started = time.time()
    torch.manual_seed(config.seed)
    frames, targets, smoke = motion_pairs(data_root, "train", config.max_videos, config.frames_per_video)
    try:
        val_split = "val"
        val = motion_pairs(data_root, val_split, config.val_videos, config.frames_per_video)
    except DataError:  # no val split, or none with measurable motion
        val_split = None
    if val_split is None:  # hold out the last tenth of the training pairs
        if len(frames) < 2:
            raise DataError(data_root, "only one measurable frame pair and no val split: nothing to train and "
                                       "score on")
        cut = max(1, len(frames) // 10)
        val = (frames[-cut:], targets[-cut:], smoke[-cut:])
        frames, targets, smoke = frames[:-cut], targets[:-cut], smoke[:-cut]
    progress(f"motion pairs: {len(frames)} train, {len(val[0])} {val_split or 'held-out train'} "
             f"({time.time() - started:.0f} s)")
    mask = smoke.astype(bool)
    prior = (float(targets[:, 0][mask].mean()), float(targets[:, 1][mask].mean())) if mask.any() else (0.0, 0.0)

    model = MotionFieldNet(config.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    step = 0
    state_path = os.path.join(out, STATE_FILE)
    if resume and os.path.isfile(state_path):
        try:
            state = torch.load(state_path, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step = int(state["step"])
            generator.set_state(state["rng"])
        except Exception as err:  # noqa: BLE001 - any unreadable or mismatched state: say which file
            raise CheckpointError(state_path, f"cannot resume from it ({type(err).__name__}: {err}); delete it "
                                              "to start over") from None
        progress(f"resumed at step {step}")
    frames_t = frames_to_input(frames)
    targets_t, smoke_t = torch.from_numpy(targets), torch.from_numpy(smoke)
    model.train()
    losses = []
    while step < config.steps:
        idx = torch.randint(0, len(frames_t), (config.batch_size,), generator=generator)
        flip = torch.rand(config.batch_size, generator=generator) < 0.5
        x, y, m = frames_t[idx].clone(), targets_t[idx].clone(), smoke_t[idx].clone()
        x[flip], y[flip], m[flip] = x[flip].flip(-1), y[flip].flip(-1), m[flip].flip(-1)
        y[flip, 0] = -y[flip, 0]  # mirrored: rightwards becomes leftwards
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, config)
        loss = weighted_field_error(model(x), y, m, config.smoke_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if step % config.checkpoint_every == 0 or step == config.steps:
            _save_state(out, model, optimizer, step, generator)
            progress(f"step {step}/{config.steps}: loss {np.mean(losses[-50:]):.4f} "
                     f"({time.time() - started:.0f} s)")
            model.train()
    scores = score_fields(model, *val, prior)
    info = {"split_scored": val_split or "held-out train", "train_pairs": int(len(frames)),
            "train_prior_drift": prior[0], "train_prior_rise": prior[1], "steps": step,
            "seconds": round(time.time() - started, 1), "config": asdict(config), **scores}
    save_motion_net(out, model, info)
    # A finished run needs no resume state; it would only sit in a checkpoint folder (3.6 MB at width 16).
    if os.path.isfile(state_path):
        os.remove(state_path)
    return info


def describe_scores(info: dict) -> str:
    """One line of a motion network's scores on its held-out pairs."""
    return (f"smoke-pixel RMSE on {info['pairs']} {info['split_scored']} pairs, px per frame: network "
            f"{info['rmse_net']:.3f}, one mean velocity {info['rmse_prior']:.3f}, zero motion "
            f"{info['rmse_zero']:.3f}; mean rise predicted {info['rise_pred']:.3f}, true {info['rise_true']:.3f}")
