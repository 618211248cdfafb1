"""What the distillers share (:mod:`~smokeflow.training.guidance_distiller`,
:mod:`~smokeflow.training.student_distiller`): the teacher and its latent cache, the output folder, and the
student's training loop with its EMA, logs, time limit and atomic checkpoints that resume exactly.

A distiller supplies what differs: the student, the loss of one step's batch, the learning rate of a step, how
the student's weights are written and how the EMA student is scored on fixed val draws.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from smokeflow.errors import CheckpointError, DataError
from smokeflow.training.checkpoint_io import (DETAIL_FLOW_WEIGHTS, FLOW_WEIGHTS, MODEL_CARD, TRAIN_STATE,
                                              atomic_write)


@dataclass
class TeacherAndData:
    """pipeline: the teacher's :class:`~smokeflow.pipeline.SmokeFlow`; train / val: its latent cache's clips."""

    pipeline: object
    train: object
    val: object
    device: torch.device


def load_teacher_and_data(teacher: str, data_root: str, out: str, frames_per_clip: int, seed: int,
                          resume: bool, device: str) -> TeacherAndData:
    """Check the folders (DataError / CheckpointError naming the file) and load the teacher and its data."""
    from smokeflow.data.latent_cache import LatentClipDataset
    from smokeflow.pipeline import SmokeFlow

    if os.path.abspath(teacher) == os.path.abspath(out):
        raise DataError(out, "the student must go to a new folder, not over its teacher")
    state_path = os.path.join(out, TRAIN_STATE)
    if resume and not os.path.isfile(state_path):
        raise CheckpointError(state_path, "not found: nothing to resume (start without --resume)")
    device = torch.device(device)
    pipeline = SmokeFlow.from_pretrained(teacher, device=device)
    if not pipeline.has_flow:
        raise CheckpointError(teacher, f"has no {FLOW_WEIGHTS} to distil")
    train = LatentClipDataset(data_root, "train", frames_per_clip, random_horizontal_flip=True, windows="all",
                              seed=seed)
    val = LatentClipDataset(data_root, "val", frames_per_clip, windows="all", seed=seed)
    if len(train) == 0:
        raise DataError(data_root, f"the latent cache has no training clips of {frames_per_clip} frames")
    return TeacherAndData(pipeline, train, val, device)


def copy_teacher_files(teacher: str, out: str) -> None:
    """Everything of the teacher's folder (its flow weights too) but its detail weights, card, pictures and
    training state."""
    for name in sorted(os.listdir(teacher)):
        source = os.path.join(teacher, name)
        if (os.path.isfile(source) and name not in (DETAIL_FLOW_WEIGHTS, MODEL_CARD, TRAIN_STATE)
                and not name.endswith((".png", ".gif", ".jsonl"))):
            shutil.copy2(source, os.path.join(out, name))


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a file)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, write)


def train_student(student: torch.nn.Module, out: str, config, *, device: torch.device, resume: bool,
                  batch_loss: Callable[[int], tuple[torch.Tensor, dict]],
                  learning_rate: Callable[[int], float],
                  save_student: Callable[[dict], None],
                  validate: Callable[[torch.nn.Module], dict],
                  summarize: Callable[[list[dict]], dict],
                  describe: Callable[[dict], str],
                  on_new_run: Callable[[], None],
                  score_start: bool = False, progress=print, max_minutes: float | None = None,
                  started: float | None = None) -> dict:
    """Train ``student`` for ``config.steps`` steps; returns the last logged figures.

    config: needs steps, ema_decay, learning_rate, weight_decay, grad_clip, log_every, checkpoint_every (and is
    logged whole). batch_loss(step) -> (loss, figures of the step as tensors): its draws must depend on the
    step alone (exact resume). summarize(figures of the steps since the last log line) -> floats to log.
    save_student(EMA weights) writes them into ``out``; validate(EMA student, eval mode) -> val figures;
    describe(last figures) -> the progress line's text. on_new_run: writes the folder's other files when the
    run does not resume. score_start: also score and log the student before its first step.
    """
    from smokeflow.training.checkpoint_io import load_train_state, save_train_state
    from smokeflow.training.flow_trainer import EMA
    from smokeflow.training.run_logger import RunLogger, truncate_after_step

    started = time.perf_counter() if started is None else started
    state_path = os.path.join(out, TRAIN_STATE)
    student.train()
    ema = EMA(student, config.ema_decay)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, betas=(0.9, 0.99),
                                  weight_decay=config.weight_decay)
    os.makedirs(out, exist_ok=True)
    step = 0
    if resume:
        state = load_train_state(state_path, device)
        try:
            student.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            ema.load_state_dict(state["ema"])
            step = int(state["step"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(state_path, "is not the state of a student of this shape: "
                                  f"{str(err).splitlines()[0]}") from None
        truncate_after_step(out, step)
        progress(f"resumed at step {step}")
    else:
        on_new_run()
        truncate_after_step(out, 0)  # a new run in a used folder (--overwrite) starts a new metrics log
    logger = RunLogger(out, project="smokeflow", run_name=os.path.basename(os.path.normpath(out)),
                       config=asdict(config))
    last: dict = {}

    def checkpoint(done: int) -> None:
        """Save, then score the saved EMA student on val (logged, kept in ``last``, reported)."""
        save_student(ema.shadow)
        save_train_state(state_path, {"step": done, "model": student.state_dict(),
                                      "optimizer": optimizer.state_dict(), "ema": ema.state_dict()})
        model = type(student)(student.config).to(device)
        model.load_state_dict(ema.shadow)
        with torch.no_grad():
            figures = validate(model.eval())
        logger.log(done, figures, kind="val")
        last.update(figures)
        progress(f"step {done}/{config.steps}: {describe(last)} ({time.perf_counter() - started:.0f} s)")
        student.train()

    if score_start and step == 0:
        checkpoint(0)
    window = []
    window_start = time.perf_counter()
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        loss, figures = batch_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
        optimizer.step()
        ema.update(student)
        # Kept on the device until a log line: reading them every step would make the host wait for the GPU.
        window.append(figures)
        step += 1
        out_of_time = (max_minutes is not None and time.perf_counter() - started > 60 * max_minutes
                       and step < config.steps)
        if step % config.log_every == 0 or step == config.steps or out_of_time:
            logged = {**summarize(window), "lr": optimizer.param_groups[0]["lr"],
                      "steps_per_s": len(window) / max(time.perf_counter() - window_start, 1e-9)}
            logger.log(step, logged, kind="train")
            last.update(logged)
            window, window_start = [], time.perf_counter()
        if step % config.checkpoint_every == 0 or step == config.steps:
            checkpoint(step)
        if out_of_time:
            if step % config.checkpoint_every:
                checkpoint(step)
            progress(f"stopped after {max_minutes} minutes at step {step} (resume with --resume)")
            break
    logger.close()
    last["steps_done"] = step
    return last
