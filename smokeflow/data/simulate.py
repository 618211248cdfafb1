"""Simulated smoke datasets: sequences in memory, the users' on-disk layout, and a contact sheet.

Every sequence has its own seed, derived from ``(dataset seed, split, index)``, and the solver treats
the sequences of a batch independently, so a sequence's frames do not depend on the batch size, the
number of workers, or which other splits are generated.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from smokeflow.data.dataset_stats import per_sequence_statistics, summarize_sequence_statistics
from smokeflow.data.naming import FRAME_NAME_RE, SPLITS, split_list_path, write_split_list, write_video_pngs
from smokeflow.data.smoke_scenes import (
    GRID, SPONGE_SIDES, SPONGE_TOP, STEPS_PER_FRAME, WARMUP_STEPS, SceneBatch, draw_scene, render_frames,
    total_steps,
)
from smokeflow.data.smoke_solver import SmokeSolver
from smokeflow.errors import DataError

# Sequences simulated together; results do not depend on it (see module docstring), only speed does.
BATCH_SIZE = 16
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
CONTACT_SHEET_NAME = "contact_sheet.png"
CONTACT_SHEET_ROWS = 8


@contextlib.contextmanager
def single_threaded_torch():
    """Run torch CPU ops on one thread inside the block (restored afterwards).

    The solver's ops are small (a batch of 128x128 grids); torch's intra-op threads gain little on
    them and, when other processes load the cores, spin-waiting threads made a run 10x slower
    (measured: 6.7 s with one thread vs 73 s with two on the loaded 2-core machine). Use --workers
    for parallelism instead; results do not depend on the thread count either way.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def sequence_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of sequence ``index`` of ``split`` in the dataset with ``seed``."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def video_name(split: str, index: int) -> str:
    """Name of a simulated video, e.g. ``sim_train_00012`` (unique across splits)."""
    return f"sim_{split}_{index:05d}"


def simulate_indices(seed: int, split: str, indices: list[int], num_frames: int, size: int = 64,
                     device="cpu", fading: float = 0.0) -> np.ndarray:
    """Simulate the given sequences of ``split`` together; returns uint8 [len(indices),T,size,size,3].
    fading: share of fading scenes (:func:`smokeflow.data.smoke_scenes.draw_scene`)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    scenes = [draw_scene(sequence_rng(seed, split, i), num_frames, fading) for i in indices]
    batch = SceneBatch(scenes, device=device)
    solver = SmokeSolver(len(scenes), GRID, GRID, SPONGE_TOP, SPONGE_SIDES, device=device)
    frames = np.empty((len(scenes), num_frames, size, size, 3), dtype=np.uint8)
    with torch.no_grad():
        for step in range(total_steps(num_frames)):
            if step >= WARMUP_STEPS and (step - WARMUP_STEPS) % STEPS_PER_FRAME == 0:
                frame = (step - WARMUP_STEPS) // STEPS_PER_FRAME
                frames[:, frame] = render_frames(solver.density, scenes, frame, size)
            solver.step(batch.step_dt(step), batch.forcing(step), batch.physics)
    return frames


def simulate_sequences(num_sequences: int, num_frames: int, seed: int, size: int = 64,
                       split: str = "train", device="cpu", fading: float = 0.0) -> np.ndarray:
    """Simulate ``num_sequences`` smoke sequences of ``num_frames`` frames.

    Returns uint8 [N,T,size,size,3]: smoke on black, RGB 0-255. Deterministic for ``seed``; sequence i
    equals video i of ``split`` of a dataset written by :func:`write_simulated_dataset` with that seed (and
    ``fading``, the share of scenes made to fade).
    """
    if num_sequences < 0:
        raise ValueError(f"num_sequences must be >= 0, got {num_sequences}")
    out = np.empty((num_sequences, num_frames, size, size, 3), dtype=np.uint8)
    with single_threaded_torch():
        for start in range(0, num_sequences, BATCH_SIZE):
            indices = list(range(start, min(start + BATCH_SIZE, num_sequences)))
            out[start:start + len(indices)] = simulate_indices(seed, split, indices, num_frames, size, device, fading)
    return out


@dataclass
class _Job:
    out: str
    split: str
    indices: list
    num_frames: int
    seed: int
    size: int
    keep_frames: int  # how many of these sequences to send back for the contact sheet
    fading: float = 0.0


def _run_job(job: _Job):
    """Simulate one batch and write its PNGs; returns (split, indices, per-sequence stats, kept frames)."""
    frames = simulate_indices(job.seed, job.split, job.indices, job.num_frames, job.size, fading=job.fading)
    split_dir = os.path.join(job.out, job.split)
    for index, video in zip(job.indices, frames):
        write_video_pngs(split_dir, video_name(job.split, index), video)
    return job.split, job.indices, per_sequence_statistics(frames), frames[:job.keep_frames]


def _worker_init() -> None:
    # One thread per worker process: the workers already use the cores (see single_threaded_torch).
    torch.set_num_threads(1)


def _check_output_folder(out: str, force: bool) -> None:
    """Refuse a non-empty ``out`` unless ``force``; with ``force``, remove only our own earlier files
    (frame PNGs in split folders, split lists, the contact sheet) so no stale frames stay behind."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(out, "exists and is not a folder; choose another --out")
    if not os.path.isdir(out) or not os.listdir(out):
        return
    if not force:
        raise DataError(out, "folder is not empty (it may hold a dataset); refusing to overwrite it. "
                             "Choose another --out or pass --force to replace the simulated files")
    for split in SPLITS:
        split_dir = os.path.join(out, split)
        if os.path.isdir(split_dir):
            for name in os.listdir(split_dir):
                if FRAME_NAME_RE.match(name) or re.match(r".+_frame_\d{4,}\.png\.tmp$", name):
                    os.remove(os.path.join(split_dir, name))
        if os.path.isfile(split_list_path(out, split)):
            os.remove(split_list_path(out, split))
    sheet = os.path.join(out, CONTACT_SHEET_NAME)
    if os.path.isfile(sheet):
        os.remove(sheet)


def write_contact_sheet(path: str, sequences: np.ndarray, max_columns: int = 20, gap: int = 2) -> str:
    """Save a grid PNG: one row per sequence of ``sequences`` uint8 [N,T,H,W,3], frames as columns
    (at most ``max_columns``, evenly spaced), separated by ``gap`` grey pixels. Returns ``path``."""
    sequences = np.asarray(sequences)
    n, t, h, w, _ = sequences.shape
    columns = np.unique(np.linspace(0, t - 1, min(t, max_columns)).round().astype(int))
    sheet = np.full((n * (h + gap) + gap, len(columns) * (w + gap) + gap, 3), 40, dtype=np.uint8)
    for r in range(n):
        for c, frame in enumerate(columns):
            y, x = gap + r * (h + gap), gap + c * (w + gap)
            sheet[y:y + h, x:x + w] = sequences[r, frame]
    tmp = path + ".tmp"
    Image.fromarray(sheet).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def write_simulated_dataset(out, train: int, val: int, test: int, frames: int, seed: int, workers: int = 1,
                            force: bool = False, size: int = 64, progress: bool = True, fading: float = 0.0) -> dict:
    """Simulate a dataset and write it in the users' layout.

    Writes ``OUT/<split>/sim_<split>_<NNNNN>_frame_<NNNN>.png`` (uint8 RGB, lossless),
    ``OUT/<split>_files.txt`` for every split with at least one video, and ``OUT/contact_sheet.png``
    (the first sequences of the first non-empty split as rows, frames as columns). ``workers``
    processes give results identical to one. Refuses a non-empty ``out`` unless ``force`` (then only
    earlier simulated files are replaced; nothing else is deleted). ``fading``: share of sequences whose smoke
    fades (:func:`smokeflow.data.smoke_scenes.make_fading`); the others are those ``fading`` = 0 writes.

    Returns the dataset statistics (see :func:`smokeflow.data.dataset_stats.smoke_dataset_statistics`)
    with an extra key ``contact_sheet`` (its path).
    """
    out = os.fspath(out)
    counts = {"train": int(train), "val": int(val), "test": int(test)}
    if any(c < 0 for c in counts.values()) or sum(counts.values()) == 0:
        raise ValueError(f"need non-negative split sizes with at least one sequence, got {counts}")
    if frames < 2:
        raise ValueError(f"need at least 2 frames per sequence, got {frames}")
    if not 0.0 <= fading <= 1.0:
        raise ValueError(f"fading must be a share in [0, 1], got {fading}")
    _check_output_folder(out, force)
    os.makedirs(out, exist_ok=True)

    jobs = []
    sheet_split = next(s for s in SPLITS if counts[s] > 0)
    for split in SPLITS:
        for start in range(0, counts[split], BATCH_SIZE):
            indices = list(range(start, min(start + BATCH_SIZE, counts[split])))
            keep = max(0, CONTACT_SHEET_ROWS - start) if split == sheet_split else 0
            jobs.append(_Job(out, split, indices, frames, seed, size, keep, fading))

    results = []
    bar = tqdm(total=sum(counts.values()), unit="seq", desc="simulate", disable=not progress)
    # Starting a worker costs seconds (it imports torch), so never start more than there are batches.
    workers = min(int(workers), len(jobs))
    if workers <= 1:
        with single_threaded_torch():
            for job in jobs:
                results.append(_run_job(job))
                bar.update(len(job.indices))
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_worker_init) as pool:
            for result in pool.imap_unordered(_run_job, jobs):
                results.append(result)
                bar.update(len(result[1]))
    bar.close()

    results.sort(key=lambda r: (SPLITS.index(r[0]), r[1][0]))
    for split in SPLITS:
        if counts[split]:
            write_split_list(out, split, [video_name(split, i) for i in range(counts[split])])
    per_sequence = {key: np.concatenate([r[2][key] for r in results]) for key in results[0][2]}
    kept = np.concatenate([r[3] for r in results if len(r[3])])
    stats = summarize_sequence_statistics(per_sequence)
    stats["contact_sheet"] = write_contact_sheet(os.path.join(out, CONTACT_SHEET_NAME), kept)
    return stats
