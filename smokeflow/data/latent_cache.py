"""Memory-mapped cache of a split's VQVAE latents, so flow training never re-encodes frames.

Layout (beside the data, ``DATA/.latents/<split>/``; a different ``cache_root`` may be given):

- ``latents.npy``          float16 [N_frames, C, h, w] normalised latents of every frame of every video, in
                           video order (opened with ``np.load(mmap_mode="r")``: nothing is read until used)
- ``latents_flipped.npy``  the same for left-right flipped frames (optional; an encoder is not
                           flip-equivariant, so flipping a latent grid is NOT the latent of a flipped frame)
- ``index.json``           videos (name, offset, num_frames), latent shape, the checkpoint hash (SHA-256 of
                           exactly what the cached latents depend on: the encoder's tensors and the latent
                           statistics, see :func:`checkpoint_hash`) and the data fingerprint (names, sizes and
                           mtimes of the frame files)

:func:`build_latent_cache` reuses a cache whose index matches the checkpoint and the data and rebuilds it
otherwise (into a temporary folder renamed into place, so a killed build never leaves a half cache that
looks complete). A decoder fine-tune (``train-vqvae --finetune-decoder``) keeps the hash, so it does not
invalidate caches; any change of the encoder or of the statistics does. A rebuild for the same checkpoint copies the latents of videos whose files did not change
(per-video fingerprints), so adding videos to a split only encodes the new ones. float16 is exact enough for ~N(0,1) latents (relative error 5e-4) and halves the size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from smokeflow.data.clip_windows import WINDOW_MODES, ClipWindows, clip_span
from smokeflow.data.dataset_index import KIND_FRAMES, VideoEntry
from smokeflow.data.layouts import list_videos, read_video_entry
from smokeflow.errors import DataError

CACHE_DIRNAME = ".latents"
INDEX_FILE = "index.json"
LATENTS_FILE = "latents.npy"
FLIPPED_FILE = "latents_flipped.npy"
CACHE_VERSION = 1


def default_cache_dir(data_root: str | os.PathLike, split: str) -> str:
    return os.path.join(os.fspath(data_root), CACHE_DIRNAME, split)


ENCODER_PREFIX = "encoder."  # state-dict keys of the VQVAE encoder


def checkpoint_hash(checkpoint_folder: str | os.PathLike) -> str:
    """Identity of what a checkpoint's cached latents depend on: SHA-256 over the encoder's tensors and the
    latent statistics (``mean``, ``std``), each by name, shape and float32 values.

    The cache stores *pre-quantisation* latents (``SmokeFlow.encode``), so neither the decoder nor the
    codebook enter: a decoder fine-tune keeps the hash. Values are hashed as float32 (the dtype the model
    computes in), so a checkpoint re-saved as float16 with the same values does too.
    """
    from smokeflow.training.checkpoint_io import LATENT_STATS, VQVAE_WEIGHTS, load_weights

    folder = os.fspath(checkpoint_folder)
    weights = load_weights(os.path.join(folder, VQVAE_WEIGHTS))
    stats = load_weights(os.path.join(folder, LATENT_STATS))
    tensors = {name: t for name, t in weights.items() if name.startswith(ENCODER_PREFIX)}
    tensors.update({f"latent_stats.{name}": stats[name] for name in ("mean", "std") if name in stats})
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor.is_floating_point():
            tensor = tensor.float()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def legacy_checkpoint_hash(checkpoint_folder: str | os.PathLike) -> str:
    """The key caches were built with before :func:`checkpoint_hash` (SHA-256 of the weights and latent
    statistics *files*); only used to recognise such caches, see :func:`migrate_legacy_key`."""
    from smokeflow.training.checkpoint_io import LATENT_STATS, VQVAE_WEIGHTS, file_sha256

    folder = os.fspath(checkpoint_folder)
    parts = [file_sha256(os.path.join(folder, name), length=64) for name in (VQVAE_WEIGHTS, LATENT_STATS)]
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


def migrate_legacy_key(cache_dir: str, checkpoint_folder: str | os.PathLike, ckpt_hash: str) -> bool:
    """If the cache at ``cache_dir`` carries the old file-based key of *this* checkpoint (so it was made by
    this very encoder), rewrite its index with the new key ``ckpt_hash`` (atomically; the latents are not
    touched) and return True. False when there is nothing to migrate."""
    index = read_index(cache_dir)
    if not index or index.get("checkpoint_hash") in (None, ckpt_hash):
        return False
    if index.get("checkpoint_hash") != legacy_checkpoint_hash(checkpoint_folder):
        return False
    index["checkpoint_hash"] = ckpt_hash
    path = os.path.join(cache_dir, INDEX_FILE)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(index, fh)
    os.replace(tmp, path)
    return True


def video_fingerprint(video: VideoEntry) -> str:
    """Hash of one video's name, length and source files' size + mtime (metadata only: a stat per file)."""
    digest = hashlib.sha256(f"{video.name}|{video.num_frames}|{video.kind}|{video.sequence_index}\n".encode())
    paths = video.frame_paths if video.kind == KIND_FRAMES else [video.source]
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{os.path.basename(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{os.path.basename(path)}:missing\n".encode())
    return digest.hexdigest()[:16]


def data_fingerprint(video_fingerprints: list[str]) -> str:
    """Hash of a whole split from its videos' fingerprints (in order).

    Fingerprinting a 160k-frame split stats every frame file, about a second; a frame rewritten in place
    changes its mtime and so the fingerprint.
    """
    return hashlib.sha256("\n".join(video_fingerprints).encode()).hexdigest()[:16]


@dataclass
class CacheInfo:
    """What :func:`build_latent_cache` did: folder, whether it was (re)built, frames, seconds, frames/s."""

    folder: str
    rebuilt: bool
    num_frames: int
    seconds: float
    reason: str

    @property
    def frames_per_second(self) -> float:
        return self.num_frames / self.seconds if self.seconds > 0 else float("nan")


def read_index(cache_dir: str | os.PathLike) -> dict | None:
    path = os.path.join(os.fspath(cache_dir), INDEX_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None


def cache_status(cache_dir: str, ckpt_hash: str, fingerprint: str, flips: bool) -> str:
    """'' when the cache at ``cache_dir`` is valid for this checkpoint/data, else why it must be rebuilt."""
    index = read_index(cache_dir)
    if index is None:
        return "no cache yet"
    if index.get("version") != CACHE_VERSION:
        return "cache format changed"
    if index.get("checkpoint_hash") != ckpt_hash:
        return "the VQVAE checkpoint changed"
    if index.get("data_fingerprint") != fingerprint:
        return "the data changed"
    if flips and not index.get("flips"):
        return "flipped latents requested"
    for name in [LATENTS_FILE] + ([FLIPPED_FILE] if index.get("flips") else []):
        if not os.path.isfile(os.path.join(cache_dir, name)):
            return f"{name} is missing"
    return ""


def build_latent_cache(checkpoint_folder: str | os.PathLike, data_root: str | os.PathLike, split: str,
                       flips: bool | None = None, cache_root: str | os.PathLike | None = None,
                       device: str | torch.device = "cpu", batch_size: int = 256, force: bool = False,
                       progress: bool = True, pipe=None) -> CacheInfo:
    """Encode every frame of ``split`` once into a memory-mapped cache (reused when still valid).

    flips: also cache latents of left-right flipped frames (default: True for the train split).
    cache_root: folder holding ``<split>/`` caches (default ``DATA/.latents``). pipe: an already loaded
    SmokeFlow for this checkpoint (saves loading it again per split).
    """
    from smokeflow.pipeline import SmokeFlow

    data_root = os.fspath(data_root)
    flips = (split == "train") if flips is None else bool(flips)
    cache_dir = (os.path.join(os.fspath(cache_root), split) if cache_root is not None
                 else default_cache_dir(data_root, split))
    videos = list_videos(data_root, split)
    ckpt_hash = checkpoint_hash(checkpoint_folder)
    migrate_legacy_key(cache_dir, checkpoint_folder, ckpt_hash)
    fingerprints = [video_fingerprint(v) for v in videos]
    fingerprint = data_fingerprint(fingerprints)
    reason = "forced" if force else cache_status(cache_dir, ckpt_hash, fingerprint, flips)
    total = sum(v.num_frames for v in videos)
    if not reason:
        return CacheInfo(cache_dir, False, total, 0.0, "up to date")

    pipe = pipe or SmokeFlow.from_pretrained(checkpoint_folder, device=device)
    cfg = pipe.vqvae.config
    shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    parent = os.path.dirname(cache_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = f"{cache_dir}.tmp.{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    start = time.perf_counter()
    reusable = _reusable_latents(cache_dir, ckpt_hash, flips) if not force else {}
    try:
        arrays = {LATENTS_FILE: np.lib.format.open_memmap(os.path.join(tmp_dir, LATENTS_FILE), mode="w+",
                                                          dtype=np.float16, shape=(total, *shape))}
        if flips:
            arrays[FLIPPED_FILE] = np.lib.format.open_memmap(os.path.join(tmp_dir, FLIPPED_FILE), mode="w+",
                                                             dtype=np.float16, shape=(total, *shape))
        entries, offset = [], 0
        pending, pending_at = [], []  # frames waiting for a full encoder batch, and where they go
        bar = tqdm(total=total, desc=f"encoding {split}", unit="frame", disable=not progress, dynamic_ncols=True)

        def flush():
            nonlocal pending, pending_at
            if not pending:
                return
            frames = np.concatenate(pending)
            z = pipe.encode(frames).numpy().astype(np.float16)
            if flips:
                z_flip = pipe.encode(np.ascontiguousarray(frames[:, :, ::-1])).numpy().astype(np.float16)
            position = 0
            for at, count in pending_at:
                arrays[LATENTS_FILE][at:at + count] = z[position:position + count]
                if flips:
                    arrays[FLIPPED_FILE][at:at + count] = z_flip[position:position + count]
                position += count
            bar.update(frames.shape[0])
            pending, pending_at = [], []

        reused = 0
        for video, video_fp in zip(videos, fingerprints):
            entries.append({"name": video.name, "offset": offset, "num_frames": int(video.num_frames),
                            "fingerprint": video_fp})
            if video_fp in reusable:
                # Unchanged video, same checkpoint: copy its latents from the previous cache.
                for name, array in arrays.items():
                    array[offset:offset + video.num_frames] = reusable[video_fp][name]
                offset += video.num_frames
                reused += video.num_frames
                bar.update(video.num_frames)
                continue
            frames = read_video_entry(video, pipe.input_size)
            pending.append(frames)
            pending_at.append((offset, frames.shape[0]))
            offset += frames.shape[0]
            if sum(p.shape[0] for p in pending) >= batch_size:
                flush()
        flush()
        if reused:
            reason += f"; {reused} frames of unchanged videos reused"
        bar.close()
        for array in arrays.values():
            array.flush()
        del arrays
        seconds = time.perf_counter() - start
        index = {"version": CACHE_VERSION, "split": split, "checkpoint": os.path.abspath(os.fspath(checkpoint_folder)),
                 "checkpoint_hash": ckpt_hash, "data_root": os.path.abspath(data_root),
                 "data_fingerprint": fingerprint, "shape": list(shape), "dtype": "float16", "normalised": True,
                 "flips": flips, "num_frames": total, "videos": entries, "encode_seconds": round(seconds, 2)}
        with open(os.path.join(tmp_dir, INDEX_FILE), "w", encoding="utf-8") as fh:
            json.dump(index, fh)
        # Swap in the new cache: the old one (if any) is removed only after the new one is complete.
        old_dir = f"{cache_dir}.old.{os.getpid()}"
        if os.path.exists(cache_dir):
            os.replace(cache_dir, old_dir)
        os.replace(tmp_dir, cache_dir)
        shutil.rmtree(old_dir, ignore_errors=True)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return CacheInfo(cache_dir, True, total, seconds, reason)


def _reusable_latents(cache_dir: str, ckpt_hash: str, flips: bool) -> dict[str, dict[str, np.ndarray]]:
    """Latents of the previous cache at ``cache_dir`` per video fingerprint, when it was made by the same
    checkpoint (memory-mapped views: nothing is read until copied). Empty when nothing can be reused."""
    index = read_index(cache_dir)
    if not index or index.get("version") != CACHE_VERSION or index.get("checkpoint_hash") != ckpt_hash:
        return {}
    if flips and not index.get("flips"):
        return {}
    try:
        arrays = {LATENTS_FILE: np.load(os.path.join(cache_dir, LATENTS_FILE), mmap_mode="r")}
        if flips:
            arrays[FLIPPED_FILE] = np.load(os.path.join(cache_dir, FLIPPED_FILE), mmap_mode="r")
    except (OSError, ValueError):
        return {}
    out = {}
    for entry in index.get("videos", []):
        if "fingerprint" in entry:
            rows = slice(entry["offset"], entry["offset"] + entry["num_frames"])
            out[entry["fingerprint"]] = {name: array[rows] for name, array in arrays.items()}
    return out


def resolve_cache_dir(cache_dir_or_data_root: str | os.PathLike, split: str) -> str:
    """Accepts a split cache folder, a folder of split caches, or a dataset root (-> ROOT/.latents/<split>)."""
    base = os.fspath(cache_dir_or_data_root)
    for candidate in (base, os.path.join(base, split), default_cache_dir(base, split)):
        if os.path.isfile(os.path.join(candidate, INDEX_FILE)):
            return candidate
    raise DataError(base, f"no latent cache for split '{split}' (looked for {INDEX_FILE} in {base}, "
                          f"{os.path.join(base, split)} and {default_cache_dir(base, split)}); build it with "
                          f"`smokeflow encode-latents --checkpoint CKPT --data {base}`")


class LatentClipDataset(torch.utils.data.Dataset):
    """Clips of cached normalised latents; the latent twin of :class:`~smokeflow.data.clip_dataset.ClipDataset`.

    Items: float32 tensors [T,C,h,w] (T = frames_per_sample), frames every ``skip_frames + 1``.
    windows="random" (default): one item per video, random start (and flip with probability 1/2 when
    ``random_horizontal_flip``; needs a cache built with flips). windows="all": every window of every video.
    windows="first": the first window of every video (the modes of :class:`ClipWindows`).
    seed: None (fresh randomness per access) or an int (items depend on seed, epoch, index).
    """

    def __init__(self, cache_dir_or_data_root: str | os.PathLike, split: str, frames_per_sample: int,
                 skip_frames: int = 0, random_horizontal_flip: bool = False, windows: str = "random",
                 seed: int | None = None):
        if frames_per_sample < 1 or skip_frames < 0:
            raise ValueError(f"need frames_per_sample >= 1 and skip_frames >= 0, got {frames_per_sample}, "
                             f"{skip_frames}")
        if windows not in WINDOW_MODES:  # checked before any file is read; the planner supports these modes
            raise ValueError(f"windows must be one of {WINDOW_MODES}, got {windows!r}")
        self.folder = resolve_cache_dir(cache_dir_or_data_root, split)
        index = read_index(self.folder)
        if index is None or index.get("version") != CACHE_VERSION:
            raise DataError(os.path.join(self.folder, INDEX_FILE), "unreadable or outdated latent cache index; "
                                                                  "rebuild it with `smokeflow encode-latents`")
        if random_horizontal_flip and not index.get("flips"):
            raise DataError(self.folder, "random_horizontal_flip needs flipped latents, but this cache has none; "
                                         "rebuild it with `smokeflow encode-latents --flips`")
        self.index = index
        self.split = split
        self.frames_per_sample = frames_per_sample
        self.skip_frames = skip_frames
        self.random_horizontal_flip = random_horizontal_flip
        self.windows = windows
        self.seed = seed
        self.epoch = 0
        self.span = clip_span(frames_per_sample, skip_frames)
        self.videos = [v for v in index["videos"] if v["num_frames"] >= self.span]
        if not self.videos:
            raise DataError(self.folder, f"no video of split '{split}' has the {self.span} frames one clip needs")
        self._planner = ClipWindows([v["num_frames"] for v in self.videos], frames_per_sample, skip_frames,
                                    windows, random_horizontal_flip, seed)
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def checkpoint_hash(self) -> str:
        return self.index["checkpoint_hash"]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.index["shape"])

    def _array(self, flipped: bool) -> np.ndarray:
        name = FLIPPED_FILE if flipped else LATENTS_FILE
        if name not in self._arrays:  # opened lazily, so the dataset pickles cheaply into workers
            path = os.path.join(self.folder, name)
            try:
                self._arrays[name] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise DataError(path, f"unreadable latent cache ({err}); rebuild it with `smokeflow "
                                      "encode-latents`") from None
        return self._arrays[name]

    def __len__(self) -> int:
        return len(self._planner)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = self._planner.epoch = int(epoch)

    def clip_plan(self, index: int) -> tuple[int, list[int], bool]:
        """(video index, frame indices within the video, flip) of item ``index``."""
        return self._planner.plan(index)

    def clip_rows(self, index: int) -> tuple[list[int], bool]:
        """Rows of the cache array (:meth:`stored_array`) that make item ``index``, in frame order, and whether
        they are rows of the flipped latents."""
        video, frames, flip = self.clip_plan(index)
        offset = self.videos[video]["offset"]
        return [offset + f for f in frames], flip

    def stored_array(self, flipped: bool = False) -> np.ndarray:
        """The whole memory-mapped cache array, float16 [N_frames, C, h, w] (flipped latents if ``flipped``)."""
        return self._array(flipped)

    def stored_clip(self, index: int) -> np.ndarray:
        """Item ``index`` as stored in the cache: float16 [T,C,h,w], not yet converted. Batches are stacked in
        this form and converted once on the training device (half the bytes to copy, see ``load_batch``)."""
        rows, flip = self.clip_rows(index)
        return np.asarray(self._array(flip)[rows[0]:rows[-1] + 1:self.skip_frames + 1])

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.stored_clip(index).astype(np.float32))

    def video_latents(self, video: int, flipped: bool = False) -> torch.Tensor:
        """All latents of video ``video`` (index into ``.videos``): float32 [T,C,h,w]."""
        entry = self.videos[video]
        rows = self._array(flipped)[entry["offset"]:entry["offset"] + entry["num_frames"]]
        return torch.from_numpy(np.asarray(rows, dtype=np.float32))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state
