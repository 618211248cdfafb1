"""Compact-student distillation: a shallower, narrower-MLP flow network that samples as its teacher does, for
CPUs on which the teacher's rollouts are too slow.

Why: a one-sample rollout (9 frames, N = 10 Euler) makes 90 network calls, and on the slower 2-core CPUs we
run on (AVX2 only, ~100 GFLOP/s fp32 matmul) the shipped 4-block, width-384 network alone takes ~1.6 s of them.
Its width, depth and MLP ratio set that cost; a student with half the blocks and half the MLP width does about
a third of the work per call (``VectorField.flops_per_call``).

How:
- The student starts as the teacher cut down (:func:`compact_student`): the teacher's outermost ``depth``
  input and output blocks of its U (each output block keeps its skip partner), the middle blocks dropped, and in
  each kept block the MLP's hidden units with the largest weight norm product ``|W_in row| * |W_out column|``
  (the units that can move the residual stream the most). Embeddings, projections, time MLP and head are
  copied. The width stays the teacher's, so every kept weight keeps its meaning.
- It is then fitted to the teacher's output on RIVER's training draws from the teacher's latent cache (target
  tau, reference tau - 1, context c, index distance, t ~ U[min_time, 1]), with two additions that put the draws
  where the sampler goes: a share ``warm_start_prob`` of the draws lie on the warm-start path from the reference
  (s ~ U[0, warm_start_max], t ~ U[s, 1]: what the sampler visits from a warm start), and the conditioning
  latents get Gaussian noise of std U[0, condition_noise] (the teacher was trained with it, against its own
  rollouts' errors; teacher and student see the same noisy inputs).
- The loss is the squared error between the two networks' clean-latent estimates, x_t + (1 - t) v (for a
  data-prediction network, its head's output), with smoke tokens weighted ``smoke_weight``: the estimate is
  what an Euler step moves towards, so its error is what reaches the sample (a velocity error is amplified by
  1 / (1 - t) near t = 1, where the step is short).

The output folder is a full checkpoint: the teacher's files with the student as its ``flow.safetensors`` and
the student's shape in ``config.yaml``; the teacher's detail weights are left out (they belong to the teacher's
shape). A compact checkpoint gets its own detail copy by a second run (``detail_of``): the teacher's detail copy
distilled into a copy of the compact network, written beside it as ``flow_detail.safetensors``. Checkpoints (student, optimiser, EMA, step) are written atomically every ``checkpoint_every`` steps;
every draw of a step comes from (seed, step), so ``resume`` continues exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass

import torch

from smokeflow.errors import DataError
from smokeflow.models.vector_field import VectorField
from smokeflow.training.checkpoint_io import DETAIL_FLOW_WEIGHTS, FLOW_WEIGHTS, save_weights
from smokeflow.training.precision import check_precision, describe_precision, training_autocast

STUDENT_INFO = "student.json"
STUDENT_DETAIL_INFO = "student_detail.json"


@dataclass
class StudentDistillConfig:
    """depth / mlp_ratio: the student's blocks in each half of the U and its MLP ratio (width and heads stay the
    teacher's); steps / batch_size / learning_rate: AdamW, linear warm-up over warmup_steps, then cosine decay
    to ``min_lr_ratio``; min_time: smallest flow time drawn; warm_start_prob / warm_start_max: share of draws on
    the warm-start path and the largest s; condition_noise: largest std of the noise on the conditioning
    latents; smoke_weight / smoke_threshold: loss weight of smoke tokens (:func:`smokeflow.flow.path.
    smoke_token_weights`); ema_decay: EMA of the student (the EMA is what is saved); val_batches: fixed val
    batches for ``val_gap``; precision: the student's arithmetic (:mod:`smokeflow.training.precision`)."""

    depth: int = 1
    mlp_ratio: float = 2.0
    steps: int = 4000
    batch_size: int = 64
    learning_rate: float = 3e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    min_time: float = 0.0
    warm_start_prob: float = 0.5
    warm_start_max: float = 0.3
    condition_noise: float = 0.1
    smoke_weight: float = 2.0
    smoke_threshold: float = 0.5
    ema_decay: float = 0.998
    reference_as_context_prob: float = 0.2
    frames_per_clip: int = 10
    checkpoint_every: int = 100
    log_every: int = 10
    val_batches: int = 4
    seed: int = 0
    precision: str = "fp32"

    def __post_init__(self):
        self.precision = check_precision(self.precision)
        if self.depth < 1 or not self.mlp_ratio > 0:
            raise ValueError(f"the student needs depth >= 1 and mlp_ratio > 0, got {self.depth}, {self.mlp_ratio}")
        if self.steps < 1 or self.batch_size < 1 or not 0 <= self.min_time < 1 or self.frames_per_clip < 3:
            raise ValueError("steps and batch_size must be >= 1, min_time in [0, 1), frames_per_clip >= 3")
        if not 0 <= self.warm_start_prob <= 1 or not 0 <= self.warm_start_max < 1 or self.condition_noise < 0:
            raise ValueError("warm_start_prob must be in [0, 1], warm_start_max in [0, 1), condition_noise >= 0")


def _prune_mlp(source: torch.nn.Sequential, target: torch.nn.Sequential) -> None:
    """Copy the ``target``'s number of hidden units of MLP ``source`` (Linear, act, Linear) into ``target``:
    the units with the largest |W_in row| * |W_out column|, in their original order."""
    first, last = source[0], source[2]
    keep = target[0].out_features
    score = first.weight.norm(dim=1) * last.weight.norm(dim=0)
    units = score.topk(keep).indices.sort().values
    with torch.no_grad():
        target[0].weight.copy_(first.weight[units])
        target[0].bias.copy_(first.bias[units])
        target[2].weight.copy_(last.weight[:, units])
        target[2].bias.copy_(last.bias)


def compact_student(teacher: VectorField, depth: int, mlp_ratio: float) -> VectorField:
    """A network of ``depth`` blocks per half of the U, no middle blocks and MLP ratio ``mlp_ratio``,
    initialised from ``teacher`` (see the module doc). ``depth`` must not exceed the teacher's, nor
    ``mlp_ratio`` its ratio."""
    config = teacher.config
    if depth > config.depth or mlp_ratio > config.mlp_ratio:
        raise ValueError(f"a student cut from the teacher cannot be deeper or wider: depth {depth} > "
                         f"{config.depth} or mlp_ratio {mlp_ratio} > {config.mlp_ratio}")
    student = VectorField(dataclasses.replace(config, depth=depth, mid_depth=0, mlp_ratio=mlp_ratio))
    student.to(next(teacher.parameters()).device)
    blocks = [(student.in_blocks[i], teacher.in_blocks[i]) for i in range(depth)]
    # The output blocks that pair with the kept input blocks: the teacher's last ``depth`` ones.
    blocks += [(student.out_blocks[i], teacher.out_blocks[config.depth - depth + i]) for i in range(depth)]
    taught = teacher.state_dict()
    own = {k: v for k, v in taught.items() if not k.startswith(("in_blocks.", "mid_blocks.", "out_blocks."))}
    student.load_state_dict(own, strict=False)
    for mine, theirs in blocks:
        mine.load_state_dict({k: v for k, v in theirs.state_dict().items() if not k.startswith("mlp.")},
                             strict=False)
        _prune_mlp(theirs.mlp, mine.mlp)
    return student


def student_draws(clips: torch.Tensor, path, config: StudentDistillConfig, generator: torch.Generator):
    """Draws on latent clips [B, T, C, h, w] -> (x_t, t, z_ref, z_ctx, distance, z): the network's inputs
    (RIVER's frames and times, a share on the warm-start path, noisy conditions; see the module doc) and the true
    target latents z [B, C, h, w], from which the caller weighs the smoke tokens. Indices and times come from
    the CPU ``generator``; latent-sized noise from :func:`~smokeflow.training.step_noise.device_noise_generator`."""
    from smokeflow.flow.path import sample_frame_indices
    from smokeflow.training.step_noise import device_noise_generator, normal_on

    b, device = clips.shape[0], clips.device
    noise = device_noise_generator(generator, device)
    target, reference, context = sample_frame_indices(b, clips.shape[1], generator, config.reference_as_context_prob)
    rows = torch.arange(b)
    z, z_ref, z_ctx = clips[rows, target], clips[rows, reference], clips[rows, context]
    warm = torch.rand(b, generator=generator) < config.warm_start_prob
    s = torch.where(warm, torch.rand(b, generator=generator) * config.warm_start_max, 0.0)
    low = torch.maximum(s, torch.full_like(s, config.min_time))
    t = (low + (1 - low) * torch.rand(b, generator=generator)).to(device)
    eps = normal_on(z.shape, noise, device)
    x_t = path.sample_xt(z, eps, t, z_ref, s.to(device))
    std = (torch.rand(b, 1, 1, 1, generator=generator) * config.condition_noise).to(device)
    z_ref = z_ref + std * normal_on(z_ref.shape, noise, device)
    z_ctx = z_ctx + std * normal_on(z_ctx.shape, noise, device)
    return x_t, t, z_ref, z_ctx, (target - context).to(device), z


def clean_estimate(model: VectorField, x_t, t, z_ref, z_ctx, distance) -> torch.Tensor:
    """The network's estimate of the clean latent, x_t + (1 - t) v -> [B, C, h, w] (float32)."""
    velocity = model(x_t, t, z_ref, z_ctx, distance).float()
    return x_t.float() + (1.0 - t.float()).view(-1, 1, 1, 1) * velocity


def _load_compact(folder: str, config: StudentDistillConfig, device) -> VectorField:
    """The flow network of compact checkpoint ``folder``; DataError naming it when its shape is not the
    configured student's (depth, MLP ratio)."""
    from smokeflow.flow.predictor import FlowPredictor

    model = FlowPredictor.from_folder(folder, pack=False).model
    shape = (model.config.depth, model.config.mid_depth, float(model.config.mlp_ratio))
    if shape != (config.depth, 0, float(config.mlp_ratio)):
        raise DataError(folder, f"its network has depth {shape[0]}, mid_depth {shape[1]}, MLP ratio {shape[2]}; "
                                f"the student is depth {config.depth}, MLP ratio {config.mlp_ratio}")
    return model.float().to(device)


def _write_student_config(teacher: str, out: str, student: VectorField) -> None:
    """The teacher's config.yaml with the student's network settings in its flow section."""
    import yaml

    from smokeflow.training.distillation import write_text

    with open(os.path.join(teacher, "config.yaml"), encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    network = config.setdefault("flow", {}).setdefault("vector_field_regressor", {})
    network.update(depth=student.config.depth, mid_depth=student.config.mid_depth,
                   mlp_ratio=float(student.config.mlp_ratio))
    write_text(os.path.join(out, "config.yaml"), yaml.safe_dump(config, sort_keys=False))


def distill_student(teacher: str, data_root: str, out: str, config: StudentDistillConfig, resume: bool = False,
                    progress=print, max_minutes: float | None = None, device: str = "cpu",
                    detail_of: str | None = None, init_from: str | None = None) -> dict:
    """Distil ``teacher`` (a checkpoint folder) into a compact student written to ``out`` (a new checkpoint
    folder), training on ``data_root``'s latent cache (``smokeflow encode-latents`` with the teacher). Returns
    the last logged figures. ``max_minutes`` stops after a checkpoint; resume continues exactly.

    ``detail_of``: a compact checkpoint folder (a student of ``teacher``) to make a detail copy for. The teacher is
    then ``teacher``'s detail copy (``flow_detail.safetensors``), the student starts as ``detail_of``'s network
    (not as a cut), and ``out`` gets ``detail_of``'s files with the student as their ``flow_detail.safetensors``:
    started from the same weights, the two stay close enough for ``detail=a`` to blend them, as the teacher's
    pair does (:mod:`smokeflow.flow.detail_blend`).

    ``init_from``: a compact checkpoint folder (a student of ``teacher`` of this shape) whose network the student
    starts from instead of a fresh cut: to go on distilling it with a new schedule or on other data."""
    from smokeflow.flow.path import flow_matching_loss, smoke_token_weights
    from smokeflow.training.distillation import copy_teacher_files, load_teacher_and_data, train_student, write_text
    from smokeflow.training.flow_trainer import background_latent, load_batch, step_generator, warmup_cosine_factor

    started = time.perf_counter()
    if detail_of is not None and init_from is not None:
        raise DataError(out, "a detail copy starts from the compact checkpoint it is for; do not give a start too")
    if detail_of is not None and os.path.abspath(detail_of) == os.path.abspath(out):
        raise DataError(out, "the detail copy must go to a new folder, not over the compact checkpoint it is for")
    if init_from is not None and os.path.abspath(init_from) == os.path.abspath(out):
        raise DataError(out, "the student must go to a new folder, not over the compact checkpoint it starts from")
    loaded = load_teacher_and_data(teacher, data_root, out, config.frames_per_clip, config.seed, resume, device)
    device, train, val = loaded.device, loaded.train, loaded.val
    if detail_of is not None:
        loaded.pipeline.flow.set_detail(1.0)  # CheckpointError naming the file when the teacher has no detail copy
    teacher_net = loaded.pipeline.flow.model.float().eval().requires_grad_(False)
    path = loaded.pipeline.flow.path
    if detail_of is not None or init_from is not None:
        student = _load_compact(detail_of or init_from, config, device)
    else:
        try:
            student = compact_student(teacher_net, config.depth, config.mlp_ratio).to(device)
        except ValueError as err:
            raise DataError(teacher, str(err)) from None
    background = background_latent(teacher)
    background = background.to(device) if background is not None else None
    teacher_flops, student_flops = teacher_net.flops_per_call(1), student.flops_per_call(1)
    progress(f"student: depth {config.depth}, MLP ratio {config.mlp_ratio}: "
             f"{sum(p.numel() for p in student.parameters()) / 1e6:.1f}M parameters, "
             f"{student_flops / 1e9:.2f} GFLOP per call ({student_flops / teacher_flops:.0%} of the teacher's)")

    def weights_of(z: torch.Tensor) -> torch.Tensor | None:
        if config.smoke_weight <= 1.0:
            return None
        bg = background if background is not None else z.median(dim=0).values
        return smoke_token_weights(z, bg, config.smoke_weight, config.smoke_threshold)

    val_draws = []
    if len(val):
        val_gen = torch.Generator().manual_seed(1234)
        for _ in range(config.val_batches):
            idx = torch.randint(0, len(val), (config.batch_size,), generator=val_gen).tolist()
            *draws, z = student_draws(load_batch(val, idx, device), path, config, val_gen)
            with torch.no_grad():
                val_draws.append((draws, clean_estimate(teacher_net, *draws), weights_of(z)))

    def validate(model) -> dict:
        """The EMA student's weighted squared error to the teacher's clean estimate on fixed val draws."""
        if not val_draws:
            return {"val_gap": float("nan")}
        gaps = [float(flow_matching_loss(clean_estimate(model, *d), target, w)) for d, target, w in val_draws]
        return {"val_gap": sum(gaps) / len(gaps)}

    autocast = training_autocast(device, config.precision)

    def batch_loss(step: int):
        generator = step_generator(config.seed, step, 0, 0)
        indices = torch.randint(0, len(train), (config.batch_size,), generator=generator).tolist()
        train.set_epoch(step)
        *draws, z = student_draws(load_batch(train, indices, device), path, config, generator)
        with torch.no_grad():
            target = clean_estimate(teacher_net, *draws)
        with autocast:
            estimate = clean_estimate(student, *draws)
        loss = flow_matching_loss(estimate, target, weights_of(z))
        return loss, {"gap": loss.detach()}

    def describe_checkpoint(last: dict) -> str:
        train_gap = f"{last['train_gap']:.5f} (train, last {config.log_every} steps), " if "train_gap" in last else ""
        return f"gap {train_gap}{last['val_gap']:.5f} (val, EMA)"

    def new_run() -> None:
        if detail_of is not None:
            copy_teacher_files(detail_of, out)
            return
        copy_teacher_files(teacher, out)
        _write_student_config(teacher, out, student)

    weights_file = DETAIL_FLOW_WEIGHTS if detail_of is not None else FLOW_WEIGHTS

    progress(f"student arithmetic: {describe_precision(device, config.precision)}")
    # float16 like the shipped weights: half the size, and the sampler computes in float32 either way.
    last = train_student(
        student, out, config, device=device, resume=resume, batch_loss=batch_loss,
        learning_rate=lambda step: config.learning_rate * warmup_cosine_factor(
            step, config.warmup_steps, config.steps, config.min_lr_ratio),
        save_student=lambda weights: save_weights(weights, os.path.join(out, weights_file), dtype=torch.float16),
        validate=validate, summarize=lambda window: {"train_gap": float(torch.stack([f["gap"] for f in window]).mean())},
        describe=describe_checkpoint, on_new_run=new_run, score_start=True, progress=progress,
        max_minutes=max_minutes, started=started)
    info = {"teacher": os.path.abspath(teacher) + (f" ({DETAIL_FLOW_WEIGHTS})" if detail_of else ""),
            "data": os.path.abspath(data_root), "weights": weights_file,
            "started_from": os.path.abspath(start) if (start := init_from or detail_of) else "a cut of the teacher",
            "steps_done": last.pop("steps_done"), "teacher_gflop_per_call": teacher_flops / 1e9,
            "student_gflop_per_call": student_flops / 1e9, "config": asdict(config), "last": last}
    info_name = STUDENT_DETAIL_INFO if detail_of is not None else STUDENT_INFO
    write_text(os.path.join(out, info_name), json.dumps(info, indent=2))
    return last
