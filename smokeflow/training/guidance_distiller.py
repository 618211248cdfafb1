"""Detail-guidance distillation: a network that samples as the teacher does with detail guidance, at one network
evaluation per step.

Why: detail guidance (:mod:`smokeflow.flow.detail_guidance`) keeps rollouts sharp, but every step runs the
network twice (a 9-frame rollout takes 1.55x the time). The guided velocity is a fixed function of the
teacher's, so a copy of the teacher can learn it (as classifier-free guidance is distilled for image models):

    target = v_T(x_t | z_ref) + w * m * (v_T(x_t | z_ref) - v_T(x_t | soften(z_ref)))

with soften = the reference decoded, blurred by 1 px and encoded again, and m its smoke tokens (exactly what
``SmokeFlow.predict(detail_guidance=w)`` does at each step). Training draws are RIVER's (target tau, reference
tau - 1, context c, index distance) from the teacher's latent cache, with t ~ U[min_time, 1] (the sampler with
a warm start never visits t < s) and x_t on the path of the true target frame. The student starts as the teacher
and is fitted by the mean squared error of velocities. The output folder is a full checkpoint: the teacher's
files (its flow network too) with the student's EMA weights beside them as ``flow_detail.safetensors``, so
``SmokeFlow.predict(detail=a)`` samples anywhere between the two (:mod:`smokeflow.flow.detail_blend`; a = 1:
the student alone).

The scale of the task: the teacher's own velocity is already close to the target (the guided part is a few
percent of it), so the learning rate is small and the figure to watch is ``gap_ratio``, the student's squared
error over the teacher's on the same draws: 1 at the start, 0 for a perfect copy of the guided sampler.
Checkpoints (student, optimiser, EMA, step) are written atomically every ``checkpoint_every`` steps; every
draw of a step comes from (seed, step), so ``resume`` continues exactly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass

import torch

from smokeflow.errors import CheckpointError, DataError
from smokeflow.training.checkpoint_io import (DETAIL_FLOW_WEIGHTS, FLOW_WEIGHTS, MODEL_CARD, TRAIN_STATE,
                                              atomic_write, save_weights)
from smokeflow.training.precision import check_precision, describe_precision, training_autocast

DISTILL_INFO = "distill.json"


@dataclass
class GuidanceDistillConfig:
    """weight: the detail-guidance weight w to distil; steps / batch_size / learning_rate: AdamW, linear
    warm-up over warmup_steps, then constant; min_time: smallest flow time drawn; ema_decay: EMA of the student
    (the EMA is what is saved); reference_as_context_prob: share of draws whose context is the reference itself
    (what the sampler does from one observed frame); val_batches: fixed val batches for ``val_gap_ratio``;
    precision: the student's arithmetic, "auto" / "fp32" / "bf16" (:mod:`smokeflow.training.precision`)."""

    weight: float = 0.5
    steps: int = 600
    batch_size: int = 64
    learning_rate: float = 1e-5
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    min_time: float = 0.1
    ema_decay: float = 0.99
    reference_as_context_prob: float = 0.2
    frames_per_clip: int = 10
    checkpoint_every: int = 50
    log_every: int = 10
    val_batches: int = 2
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self):
        self.precision = check_precision(self.precision)
        if not self.weight > 0:
            raise ValueError(f"the guidance weight to distil must be > 0, got {self.weight}")
        if self.steps < 1 or self.batch_size < 1 or not 0 <= self.min_time < 1 or self.frames_per_clip < 3:
            raise ValueError("steps and batch_size must be >= 1, min_time in [0, 1), frames_per_clip >= 3")


class GuidedTarget:
    """The teacher's guided velocity for training draws; the same computation as the guided sampler's step.

    pipeline: a :class:`~smokeflow.pipeline.SmokeFlow` of the teacher (its network, autoencoder and path)."""

    def __init__(self, pipeline, weight: float):
        from smokeflow.flow.detail_guidance import DetailGuidance, blurred_reference, smoke_tokens
        from smokeflow.flow.frame_decodes import decode_once_per_frame

        decode = decode_once_per_frame(pipeline.decode_images)
        self.teacher = pipeline.flow.model.float().eval().requires_grad_(False)
        self.guidance = DetailGuidance(weight, blurred_reference(decode, pipeline.encode_images),
                                       where=smoke_tokens(decode))

    @torch.no_grad()
    def __call__(self, x_t, t, z_ref, z_ctx, distance) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws ([B, C, h, w] latents, t [B], distance [B]) -> (guided target, the teacher's own velocity)."""
        soft = self.guidance.soften(z_ref).to(z_ref.dtype)
        condition = self.teacher.condition(torch.cat([z_ref, soft]), torch.cat([z_ctx, z_ctx]),
                                           torch.cat([distance, distance]))
        # Both branches anchored on the reference itself, as in the sampler (it matters for "residual" networks).
        both = self.teacher.velocity(torch.cat([x_t, x_t]), torch.cat([t, t]), condition,
                                     anchor=torch.cat([z_ref, z_ref]))
        velocity, soft_velocity = both.chunk(2)
        return self.guidance.combine(velocity, soft_velocity, self.guidance.token_weights(z_ref)), velocity


def training_draws(clips: torch.Tensor, path, config: GuidanceDistillConfig, generator: torch.Generator):
    """RIVER's draws on latent clips [B, T, C, h, w] -> (x_t, t, z_ref, z_ctx, distance), all on the clips'
    device. Indices and times come from the CPU ``generator``; the latent-sized noise from
    :func:`~smokeflow.training.step_noise.device_noise_generator` (on CPU: ``generator`` itself)."""
    from smokeflow.flow.path import sample_frame_indices
    from smokeflow.training.step_noise import device_noise_generator, normal_on

    b, device = clips.shape[0], clips.device
    target, reference, context = sample_frame_indices(b, clips.shape[1], generator, config.reference_as_context_prob)
    rows = torch.arange(b)
    z = clips[rows, target]
    t = (config.min_time + (1 - config.min_time) * torch.rand(b, generator=generator)).to(device)
    eps = normal_on(z.shape, device_noise_generator(generator, device), device)
    return (path.sample_xt(z, eps, t), t, clips[rows, reference], clips[rows, context],
            (target - context).to(device))


def _learning_rate(step: int, config: GuidanceDistillConfig) -> float:
    return config.learning_rate * min(1.0, (step + 1) / max(1, config.warmup_steps))


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _copy_teacher_files(teacher: str, out: str) -> None:
    """Everything of the teacher's folder (its flow weights too) but its detail weights, card, pictures and
    training state."""
    for name in sorted(os.listdir(teacher)):
        source = os.path.join(teacher, name)
        if (os.path.isfile(source) and name not in (DETAIL_FLOW_WEIGHTS, MODEL_CARD, TRAIN_STATE)
                and not name.endswith((".png", ".gif", ".jsonl"))):
            shutil.copy2(source, os.path.join(out, name))


def distill_detail_guidance(teacher: str, data_root: str, out: str, config: GuidanceDistillConfig,
                            resume: bool = False, progress=print, max_minutes: float | None = None,
                            device: str = "cpu") -> dict:
    """Distil ``teacher`` (a checkpoint folder) guided at ``config.weight`` into a student written to ``out``
    (a new checkpoint folder: the teacher's files, the student as its detail weights), training on ``data_root``'s latent cache (``smokeflow encode-latents`` with the
    teacher). Returns the last logged figures. ``max_minutes`` stops after a checkpoint; resume continues.
    ``device`` "cuda": teacher, student and batches there, the student's forward and backward under bf16
    autocast; the teacher's guided target stays float32 (its guided part is a few percent of the velocity,
    about the size of bf16's rounding of two branches)."""
    from smokeflow.data.latent_cache import LatentClipDataset
    from smokeflow.pipeline import SmokeFlow
    from smokeflow.training.checkpoint_io import load_train_state, save_train_state
    from smokeflow.training.flow_trainer import EMA, load_batch, step_generator
    from smokeflow.training.run_logger import RunLogger, truncate_after_step

    started = time.perf_counter()
    if os.path.abspath(teacher) == os.path.abspath(out):
        raise DataError(out, "the student must go to a new folder, not over its teacher")
    state_path = os.path.join(out, TRAIN_STATE)
    if resume and not os.path.isfile(state_path):
        raise CheckpointError(state_path, "not found: nothing to resume (start without --resume)")
    device = torch.device(device)
    pipeline = SmokeFlow.from_pretrained(teacher, device=device)
    if not pipeline.has_flow:
        raise CheckpointError(teacher, f"has no {FLOW_WEIGHTS} to distil")
    train = LatentClipDataset(data_root, "train", config.frames_per_clip, random_horizontal_flip=True,
                              windows="all", seed=config.seed)
    val = LatentClipDataset(data_root, "val", config.frames_per_clip, windows="all", seed=config.seed)
    if len(train) == 0:
        raise DataError(data_root, f"the latent cache has no training clips of {config.frames_per_clip} frames")
    target_of = GuidedTarget(pipeline, config.weight)
    path = pipeline.flow.path
    student = type(target_of.teacher)(target_of.teacher.config).to(device)
    student.load_state_dict(target_of.teacher.state_dict())
    student.train()
    ema = EMA(student, config.ema_decay)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, betas=(0.9, 0.99),
                                  weight_decay=config.weight_decay)
    os.makedirs(out, exist_ok=True)
    step = 0
    if resume:
        state = load_train_state(state_path, device)
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        step = int(state["step"])
        truncate_after_step(out, step)
        progress(f"resumed at step {step}")
    else:
        _copy_teacher_files(teacher, out)
        truncate_after_step(out, 0)  # a new run in a used folder (--overwrite) starts a new metrics log
    logger = RunLogger(out, project="smokeflow", run_name=os.path.basename(os.path.normpath(out)),
                       config=asdict(config))

    def save(done: int) -> None:
        # float16 like the shipped weights: half the size, and the sampler computes in float32 either way.
        save_weights(ema.shadow, os.path.join(out, DETAIL_FLOW_WEIGHTS), dtype=torch.float16)
        save_train_state(state_path, {"step": done, "model": student.state_dict(),
                                      "optimizer": optimizer.state_dict(), "ema": ema.state_dict()})

    val_draws = []
    if len(val):
        val_gen = torch.Generator().manual_seed(1234)
        for _ in range(config.val_batches):
            idx = torch.randint(0, len(val), (config.batch_size,), generator=val_gen).tolist()
            val_draws.append(training_draws(load_batch(val, idx, device), path, config, val_gen))

    @torch.no_grad()
    def val_gap_ratio() -> float:
        """The EMA student's squared error to the guided target over the teacher's, on fixed val draws."""
        if not val_draws:
            return float("nan")
        model = type(student)(student.config).to(device)
        model.load_state_dict(ema.shadow)
        model.eval()
        errors, gaps = 0.0, 0.0
        for draws in val_draws:
            target, teacher_velocity = target_of(*draws)
            errors += float((model(*draws) - target).pow(2).mean())
            gaps += float((teacher_velocity - target).pow(2).mean())
        return errors / max(gaps, 1e-20)

    def checkpoint(done: int) -> None:
        """Save, then score the saved EMA student on the val draws (logged, kept in ``last``, reported)."""
        save(done)
        val_ratio = val_gap_ratio()
        logger.log(done, {"val_gap_ratio": val_ratio}, kind="val")
        last["val_gap_ratio"] = val_ratio
        train_ratio = (f"{last['gap_ratio']:.3f} (train, last {config.log_every} steps), "
                       if "gap_ratio" in last else "")
        progress(f"step {done}/{config.steps}: gap ratio {train_ratio}{val_ratio:.3f} (val, EMA) "
                 f"({time.perf_counter() - started:.0f} s)")
        student.train()

    autocast = training_autocast(device, config.precision)
    progress(f"student arithmetic: {describe_precision(device, config.precision)}")
    last: dict = {}
    window = []
    window_start = time.perf_counter()
    while step < config.steps:
        generator = step_generator(config.seed, step, 0, 0)
        indices = torch.randint(0, len(train), (config.batch_size,), generator=generator).tolist()
        train.set_epoch(step)
        draws = training_draws(load_batch(train, indices, device), path, config, generator)
        target, teacher_velocity = target_of(*draws)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        with autocast:
            predicted = student(*draws)
        loss = (predicted.float() - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
        optimizer.step()
        ema.update(student)
        # Kept on the device until a log line: reading them every step would make the host wait for the GPU.
        window.append((loss.detach(), (teacher_velocity - target).pow(2).mean()))
        step += 1
        out_of_time = (max_minutes is not None and time.perf_counter() - started > 60 * max_minutes
                       and step < config.steps)
        if step % config.log_every == 0 or step == config.steps or out_of_time:
            losses, gaps = (float(torch.stack(column).sum()) for column in zip(*window))
            last = {"train_loss": losses / len(window), "gap_ratio": losses / max(gaps, 1e-20),
                    "lr": optimizer.param_groups[0]["lr"],
                    "steps_per_s": len(window) / max(time.perf_counter() - window_start, 1e-9)}
            logger.log(step, last, kind="train")
            window, window_start = [], time.perf_counter()
        if step % config.checkpoint_every == 0 or step == config.steps:
            checkpoint(step)
        if out_of_time:
            if step % config.checkpoint_every:
                checkpoint(step)
            progress(f"stopped after {max_minutes} minutes at step {step} (resume with --resume)")
            break
    logger.close()
    info = {"teacher": os.path.abspath(teacher), "data": os.path.abspath(data_root), "steps_done": step,
            "config": asdict(config), "last": last}
    atomic_write(os.path.join(out, DISTILL_INFO), lambda tmp: _write_text(tmp, json.dumps(info, indent=2)))
    return last


def describe(last: dict) -> str:
    """One line of a distillation's last figures."""
    ratio = last.get("val_gap_ratio", float("nan"))
    return (f"student's squared error to the guided velocity, relative to the teacher's: "
            f"{last.get('gap_ratio', math.nan):.3f} on training draws, {ratio:.3f} on val draws (1 = no better than "
            f"the teacher, 0 = the guided sampler exactly)")
