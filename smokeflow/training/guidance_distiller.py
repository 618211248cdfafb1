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
import time
from dataclasses import asdict, dataclass

import torch

from smokeflow.training.checkpoint_io import DETAIL_FLOW_WEIGHTS, save_weights
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


def distill_detail_guidance(teacher: str, data_root: str, out: str, config: GuidanceDistillConfig,
                            resume: bool = False, progress=print, max_minutes: float | None = None,
                            device: str = "cpu") -> dict:
    """Distil ``teacher`` (a checkpoint folder) guided at ``config.weight`` into a student written to ``out``
    (a new checkpoint folder: the teacher's files, the student as its detail weights), training on ``data_root``'s latent cache (``smokeflow encode-latents`` with the
    teacher). Returns the last logged figures. ``max_minutes`` stops after a checkpoint; resume continues.
    ``device`` "cuda": teacher, student and batches there, the student's forward and backward under bf16
    autocast; the teacher's guided target stays float32 (its guided part is a few percent of the velocity,
    about the size of bf16's rounding of two branches)."""
    from smokeflow.training.distillation import copy_teacher_files, load_teacher_and_data, train_student, write_text
    from smokeflow.training.flow_trainer import load_batch, step_generator

    started = time.perf_counter()
    loaded = load_teacher_and_data(teacher, data_root, out, config.frames_per_clip, config.seed, resume, device)
    device, train, val = loaded.device, loaded.train, loaded.val
    target_of = GuidedTarget(loaded.pipeline, config.weight)
    path = loaded.pipeline.flow.path
    student = type(target_of.teacher)(target_of.teacher.config).to(device)
    student.load_state_dict(target_of.teacher.state_dict())

    val_draws = []
    if len(val):
        val_gen = torch.Generator().manual_seed(1234)
        for _ in range(config.val_batches):
            idx = torch.randint(0, len(val), (config.batch_size,), generator=val_gen).tolist()
            val_draws.append(training_draws(load_batch(val, idx, device), path, config, val_gen))

    def validate(model) -> dict:
        """The EMA student's squared error to the guided target over the teacher's, on fixed val draws."""
        if not val_draws:
            return {"val_gap_ratio": float("nan")}
        errors, gaps = 0.0, 0.0
        for draws in val_draws:
            target, teacher_velocity = target_of(*draws)
            errors += float((model(*draws) - target).pow(2).mean())
            gaps += float((teacher_velocity - target).pow(2).mean())
        return {"val_gap_ratio": errors / max(gaps, 1e-20)}

    autocast = training_autocast(device, config.precision)

    def batch_loss(step: int):
        generator = step_generator(config.seed, step, 0, 0)
        indices = torch.randint(0, len(train), (config.batch_size,), generator=generator).tolist()
        train.set_epoch(step)
        draws = training_draws(load_batch(train, indices, device), path, config, generator)
        target, teacher_velocity = target_of(*draws)
        with autocast:
            predicted = student(*draws)
        loss = (predicted.float() - target).pow(2).mean()
        return loss, {"loss": loss.detach(), "gap": (teacher_velocity - target).pow(2).mean()}

    def summarize(window: list[dict]) -> dict:
        losses = float(torch.stack([f["loss"] for f in window]).sum())
        gaps = float(torch.stack([f["gap"] for f in window]).sum())
        return {"train_loss": losses / len(window), "gap_ratio": losses / max(gaps, 1e-20)}

    def describe_checkpoint(last: dict) -> str:
        train_ratio = (f"{last['gap_ratio']:.3f} (train, last {config.log_every} steps), "
                       if "gap_ratio" in last else "")
        return f"gap ratio {train_ratio}{last['val_gap_ratio']:.3f} (val, EMA)"

    progress(f"student arithmetic: {describe_precision(device, config.precision)}")
    # float16 like the shipped weights: half the size, and the sampler computes in float32 either way.
    last = train_student(
        student, out, config, device=device, resume=resume, batch_loss=batch_loss,
        learning_rate=lambda step: _learning_rate(step, config),
        save_student=lambda weights: save_weights(weights, os.path.join(out, DETAIL_FLOW_WEIGHTS),
                                                  dtype=torch.float16),
        validate=validate, summarize=summarize, describe=describe_checkpoint,
        on_new_run=lambda: copy_teacher_files(teacher, out), progress=progress, max_minutes=max_minutes,
        started=started)
    info = {"teacher": os.path.abspath(teacher), "data": os.path.abspath(data_root),
            "steps_done": last.pop("steps_done"), "config": asdict(config), "last": last}
    write_text(os.path.join(out, DISTILL_INFO), json.dumps(info, indent=2))
    return last


def describe(last: dict) -> str:
    """One line of a distillation's last figures."""
    ratio = last.get("val_gap_ratio", float("nan"))
    return (f"student's squared error to the guided velocity, relative to the teacher's: "
            f"{last.get('gap_ratio', math.nan):.3f} on training draws, {ratio:.3f} on val draws (1 = no better than "
            f"the teacher, 0 = the guided sampler exactly)")
