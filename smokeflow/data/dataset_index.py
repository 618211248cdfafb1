"""The index of a dataset split: which videos it holds, where their frames are, how many frames each has.

Built from file NAMES only (``os.scandir`` + the naming regex; no image is opened), so a 160k-frame
split indexes in about a second; video files are decoded once to count their frames. The index is
cached as JSON in the user's cache directory (``$SMOKEFLOW_CACHE_DIR``, else
``$XDG_CACHE_HOME/smokeflow``, else ``~/.cache/smokeflow``) — never inside the dataset, so user data is
never written to, and read-only datasets work. A cached index is reused only while everything it was
built from is unchanged: the split folder's and every frame sub-folder's modification time (which
changes whenever a file is added, removed or renamed in it) and every video/npz file's size and mtime;
an index written within 2 s of a folder's last change is not trusted (coarse-mtime filesystems).

Accepted forms of a split (they may be mixed inside one split folder):

- ``ROOT/<split>/<video>_frame_<NNNN>.png|jpg`` (the users' layout; numbering may start at 0 or 1),
- ``ROOT/<split>/<video>/*.png|jpg`` (one sub-folder per video, frames ordered by the number in the name),
- ``ROOT/<split>/<video>.mp4|gif|webm|avi|mov|mkv`` (one video file per video),
- ``ROOT/<split>/<name>.npz`` with ``frames`` uint8 [N,T,H,W,3] (videos ``<name>_<i>``) or [T,H,W,3],
- ``ROOT/<split>.npz`` with ``frames`` [N,T,H,W,3] (videos ``<split>_<i>``; optional ``names`` array).

``ROOT/<split>_files.txt`` (optional) selects and orders the videos of the split; see :func:`list_videos`.
Problems (gaps in numbering, duplicate frame numbers, empty split, paths escaping the root...) raise
:class:`~smokeflow.errors.DataError` naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import time
import zipfile

import numpy as np

from smokeflow.data.image_io import IMAGE_EXTENSIONS
from smokeflow.data.naming import FRAME_NAME_RE, frame_filename, split_list_path
from smokeflow.data.video_io import is_video_file, read_video
from smokeflow.errors import DataError

INDEX_VERSION = 1
KIND_FRAMES = "frames"   # PNG/JPEG files, one per frame
KIND_VIDEO = "video"     # one video file
KIND_NPZ = "npz"         # one sequence inside an npz array

# Folders modified less than this before the index was written are re-scanned next time (see _load_cached).
RACY_WINDOW_NS = 2_000_000_000
_LAST_NUMBER_RE = re.compile(r"(\d+)(?!.*\d)")


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One video of a split.

    name: the video's name (unique within the split). num_frames: its length T.
    kind: "frames" | "video" | "npz". source: absolute path of the folder holding the frames (frames),
    the video file (video) or the npz file (npz). frame_files: for "frames", file names inside
    ``source`` in time order. sequence_index: for "npz", the index along N (-1 when the array is [T,...]).
    """

    name: str
    num_frames: int
    kind: str
    source: str
    frame_files: tuple[str, ...] = ()
    sequence_index: int = -1

    @property
    def frame_paths(self) -> list[str]:
        return [os.path.join(self.source, f) for f in self.frame_files]


# ----------------------------------------------------------------------------------------------- paths

def _is_inside(path: str, real_root: str) -> bool:
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _check_inside(path: str, real_root: str, what: str) -> None:
    if not _is_inside(path, real_root):
        raise DataError(path, f"{what} resolves to {os.path.realpath(path)}, outside the dataset root "
                              f"{real_root} (symlinks and '..' may not leave the dataset)")


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _is_ignored_name(name: str) -> bool:
    # Hidden files, our writers' temporary files (naming.write_video_pngs writes *.tmp then renames)
    # and the contact sheets `smokeflow extract` writes next to the frames.
    return (name.startswith(".") or name.endswith(".tmp") or ".tmp." in name
            or name.lower().endswith("_preview.png"))


# -------------------------------------------------------------------------------------- frame numbering

def _ordered_frames(folder: str, video: str, numbered: list[tuple[int, str]]) -> tuple[str, ...]:
    """Sort (number, file name) pairs and check the numbering is contiguous and unique."""
    numbered.sort()
    for (a, name_a), (b, name_b) in zip(numbered, numbered[1:]):
        if a == b:
            raise DataError(os.path.join(folder, name_b),
                            f"frame number {b} of video '{video}' appears twice (also {name_a})")
    first, last = numbered[0][0], numbered[-1][0]
    if last - first + 1 != len(numbered):
        present = {n for n, _ in numbered}
        missing = [n for n in range(first, last + 1) if n not in present]
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        after = max(n for n, _ in numbered if n < missing[0])
        after_name = next(name for n, name in numbered if n == after)
        raise DataError(os.path.join(folder, after_name),
                        f"gap in frame numbering of video '{video}': {len(missing)} frame(s) missing "
                        f"after this one (numbers {shown}; frames run {first}..{last})")
    return tuple(name for _, name in numbered)


def scan_frame_folder(folder: str, real_root: str | None = None, video: str | None = None) -> VideoEntry:
    """A folder of PNG/JPEG frames of ONE video, ordered by the number in each name.

    Names may follow ``<video>_frame_<NNNN>.png`` or carry any number (``0001.png``, ``img12.jpg``);
    the last run of digits orders them. Raises DataError for an empty folder, names without a number,
    duplicate numbers, gaps, or (with ``real_root``) a frame symlink leaving the root.
    """
    video = video or os.path.basename(os.path.normpath(folder))
    numbered: list[tuple[int, str]] = []
    named_videos: set[str] = set()
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if _is_ignored_name(entry.name) or not _is_image_name(entry.name):
                    continue
                if real_root is not None and entry.is_symlink():
                    _check_inside(entry.path, real_root, "frame")
                match = FRAME_NAME_RE.match(entry.name)
                number = match.group("index") if match else None
                if match:
                    named_videos.add(match.group("video"))
                if number is None:
                    found = _LAST_NUMBER_RE.search(os.path.splitext(entry.name)[0])
                    if found is None:
                        raise DataError(entry.path, "frame file name has no frame number to order it by")
                    number = found.group(1)
                numbered.append((int(number), entry.name))
    except FileNotFoundError:
        raise DataError(folder, "frame folder not found") from None
    except NotADirectoryError:
        raise DataError(folder, "not a folder") from None
    if not numbered:
        raise DataError(folder, f"folder of video '{video}' contains no PNG/JPEG frames")
    if len(named_videos) > 1:
        shown = ", ".join(sorted(named_videos)[:3])
        raise DataError(folder, f"holds frames of {len(named_videos)} videos ({shown} ...), expected one "
                                f"video per folder (read a whole split with list_videos(root, split))")
    files = _ordered_frames(folder, video, numbered)
    return VideoEntry(name=video, num_frames=len(files), kind=KIND_FRAMES, source=os.path.abspath(folder),
                      frame_files=files)


# ------------------------------------------------------------------------------------------------- npz

def npz_frames_shape(path: str) -> tuple[int, ...]:
    """Shape of the ``frames`` array of an npz, read from the .npy header only (no data loaded)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if "frames.npy" not in archive.namelist():
                raise DataError(path, f"npz has no 'frames' array (arrays: "
                                      f"{', '.join(n[:-4] for n in archive.namelist()) or 'none'})")
            with archive.open("frames.npy") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(path, "npz file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(path, f"unreadable or truncated npz ({err})") from None
    if dtype != np.uint8:
        raise DataError(path, f"'frames' must be uint8 (0-255), got {dtype}")
    if len(shape) not in (4, 5) or shape[-1] != 3:
        raise DataError(path, f"'frames' must be [N,T,H,W,3] or [T,H,W,3], got shape {list(shape)}")
    return tuple(shape)


def _npz_names(path: str, count: int, default_prefix: str) -> list[str]:
    with np.load(path, allow_pickle=False) as data:
        if "names" in data.files:
            names = [str(n) for n in data["names"]]
            if len(names) != count or len(set(names)) != count:
                raise DataError(path, f"'names' must hold {count} distinct names, got {len(names)}")
            return names
    return [f"{default_prefix}_{i:05d}" for i in range(count)]


def scan_npz(path: str, prefix: str | None = None) -> list[VideoEntry]:
    """Entries of one npz: one per sequence of a [N,T,H,W,3] ``frames`` array, one for [T,H,W,3]."""
    shape = npz_frames_shape(path)
    prefix = prefix or os.path.splitext(os.path.basename(path))[0]
    source = os.path.abspath(path)
    if len(shape) == 4:
        return [VideoEntry(prefix, shape[0], KIND_NPZ, source)]
    names = _npz_names(path, shape[0], prefix)
    return [VideoEntry(n, shape[1], KIND_NPZ, source, sequence_index=i) for i, n in enumerate(names)]


# ----------------------------------------------------------------------------------------- split scan

def _split_paths(root: str, split: str) -> tuple[str, str]:
    return os.path.join(root, split), os.path.join(root, f"{split}.npz")


def _stat_key(path: str) -> list[int] | None:
    """[mtime_ns, size] of a file, [mtime_ns, 0] of a folder (its size is meaningless), None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, 0 if stat.S_ISDIR(st.st_mode) else st.st_size]


def scan_split(root: str, split: str) -> tuple[list[VideoEntry], dict[str, list[int] | None]]:
    """Index ``split`` of ``root`` from file names (no caching). Returns (entries sorted by name, watch)
    where ``watch`` maps each folder/file the result depends on to its stat key (for cache checks)."""
    root = os.path.abspath(root)
    real_root = os.path.realpath(root)
    if not os.path.isdir(root):
        raise DataError(root, "dataset root not found (expected a folder)")
    split_dir, split_npz = _split_paths(root, split)
    has_dir, has_npz = os.path.isdir(split_dir), os.path.isfile(split_npz)
    if has_dir and has_npz:
        raise DataError(split_npz, f"both {split_dir}/ and {split}.npz exist; keep one to make the "
                                   f"split '{split}' unambiguous")
    if not has_dir and not has_npz:
        raise DataError(split_dir, f"split '{split}' not found (expected a folder {split}/ or a file "
                                   f"{split}.npz in the dataset root)")
    watch: dict[str, list[int] | None] = {}
    if has_npz:
        _check_inside(split_npz, real_root, "split file")
        watch[split_npz] = _stat_key(split_npz)
        entries = scan_npz(split_npz, prefix=split)
    else:
        _check_inside(split_dir, real_root, "split folder")
        watch[split_dir] = _stat_key(split_dir)
        entries = _scan_split_dir(split_dir, real_root, watch)
    if not entries:
        raise DataError(split_dir, f"split '{split}' is empty: no <video>_frame_<NNNN>.png frames, frame "
                                   f"sub-folders, video files or npz files")
    names: dict[str, VideoEntry] = {}
    for e in entries:
        if e.name in names:
            raise DataError(e.source, f"video name '{e.name}' is used twice in split '{split}' "
                                      f"(also by {names[e.name].source})")
        names[e.name] = e
    entries.sort(key=lambda e: e.name)
    return entries, watch


def _scan_split_dir(split_dir: str, real_root: str, watch: dict) -> list[VideoEntry]:
    flat: dict[str, list[tuple[int, str]]] = {}
    entries: list[VideoEntry] = []
    with os.scandir(split_dir) as it:
        for entry in it:
            name = entry.name
            if _is_ignored_name(name):
                continue
            match = FRAME_NAME_RE.match(name)
            if match is not None:
                # Cheap path for 160k frames: only symlinks need a realpath check.
                if entry.is_symlink():
                    _check_inside(entry.path, real_root, "frame")
                flat.setdefault(match.group("video"), []).append((int(match.group("index")), name))
                continue
            if entry.is_symlink():
                _check_inside(entry.path, real_root, "entry")
            if entry.is_dir():
                sub = scan_frame_folder(entry.path, real_root, video=name)
                watch[entry.path] = _stat_key(entry.path)
                entries.append(sub)
            elif is_video_file(name):
                watch[entry.path] = _stat_key(entry.path)
                entries.append(VideoEntry(os.path.splitext(name)[0], len(read_video(entry.path)),
                                          KIND_VIDEO, os.path.abspath(entry.path)))
            elif name.lower().endswith(".npz"):
                watch[entry.path] = _stat_key(entry.path)
                entries.extend(scan_npz(entry.path))
            # Anything else (notes, previews, stray files) is not part of the split.
    source = os.path.abspath(split_dir)
    for video, numbered in flat.items():
        files = _ordered_frames(source, video, numbered)
        entries.append(VideoEntry(video, len(files), KIND_FRAMES, source, frame_files=files))
    return entries


# ------------------------------------------------------------------------------------------ the cache

def index_cache_dir() -> str:
    """Where cached indexes live (outside every dataset)."""
    base = os.environ.get("SMOKEFLOW_CACHE_DIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smokeflow")
    return os.path.join(base, "index")


def index_cache_path(root: str, split: str) -> str:
    real_root = os.path.realpath(root)
    digest = hashlib.sha1(f"{real_root}\0{split}".encode()).hexdigest()[:20]
    return os.path.join(index_cache_dir(), f"{digest}.json")


def _encode_entry(e: VideoEntry) -> dict:
    item = {"name": e.name, "n": e.num_frames, "kind": e.kind, "source": e.source}
    if e.kind == KIND_FRAMES:
        # Store the canonical naming compactly (first number + extension); anything else verbatim.
        match = FRAME_NAME_RE.match(e.frame_files[0])
        if match is not None and match.group("video") == e.name:
            start, ext = int(match.group("index")), match.group("ext")
            if all(f == frame_filename(e.name, start + i, ext) for i, f in enumerate(e.frame_files)):
                item["start"], item["ext"] = start, ext
                return item
        item["files"] = list(e.frame_files)
    elif e.kind == KIND_NPZ:
        item["seq"] = e.sequence_index
    return item


def _decode_entry(item: dict) -> VideoEntry:
    files: tuple[str, ...] = ()
    if item["kind"] == KIND_FRAMES:
        if "files" in item:
            files = tuple(item["files"])
        else:
            name, start, ext = item["name"], item["start"], item["ext"]
            # Same names as naming.frame_filename, inlined: this runs 160k times per cached load.
            files = tuple([f"{name}_frame_{i:04d}.{ext}" for i in range(start, start + item["n"])])
    return VideoEntry(item["name"], item["n"], item["kind"], item["source"], files, item.get("seq", -1))


def _load_cached(path: str, root: str, split: str) -> list[VideoEntry] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if data.get("version") != INDEX_VERSION or data.get("root") != os.path.realpath(root) \
            or data.get("split") != split:
        return None
    split_dir, split_npz = _split_paths(os.path.abspath(root), split)
    # A new split form appearing (folder next to npz) must invalidate too.
    expected_top = split_npz if split_npz in data["watch"] else split_dir
    other_top = split_dir if expected_top == split_npz else split_npz
    if os.path.exists(other_top):
        return None
    # "Racy" entries (as in git): a folder modified within the timestamp granularity of the moment the
    # index was written may have changed again without its mtime moving (coarse-mtime filesystems);
    # such an index is not trusted.
    racy_after = data.get("written_ns", 0) - RACY_WINDOW_NS
    for watched, key in data["watch"].items():
        if key is None or _stat_key(watched) != key or key[0] >= racy_after:
            return None
    return [_decode_entry(item) for item in data["entries"]]


def _save_cached(path: str, root: str, split: str, entries: list[VideoEntry], watch: dict) -> None:
    data = {"version": INDEX_VERSION, "root": os.path.realpath(root), "split": split, "watch": watch,
            "written_ns": time.time_ns(),
            "entries": [_encode_entry(e) for e in entries]}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs speed next time


def index_split(root: str | os.PathLike, split: str, use_cache: bool = True) -> list[VideoEntry]:
    """All videos of ``split`` (before any ``_files.txt`` selection), from the cache when still valid."""
    root = os.path.abspath(os.fspath(root))
    cache_path = index_cache_path(root, split)
    if use_cache:
        cached = _load_cached(cache_path, root, split)
        if cached is not None:
            return cached
    entries, watch = scan_split(root, split)
    if use_cache:
        _save_cached(cache_path, root, split, entries, watch)
    return entries


# ----------------------------------------------------------------------------------- _files.txt lists

def _listed_video_name(line: str) -> str:
    base = os.path.basename(line.rstrip("/\\"))
    match = FRAME_NAME_RE.match(base)
    if match is not None:
        return match.group("video")
    stem, ext = os.path.splitext(base)
    return stem if ext.lower() in (".mp4", ".gif", ".webm", ".avi", ".mov", ".mkv") else base


def read_split_list(root: str, split: str) -> list[str] | None:
    """Video names listed in ``ROOT/<split>_files.txt`` (None when there is no list).

    A line is a video name, or a frame/video file name or relative path (its video is taken).
    Blank lines and ``#`` comments are skipped. A line that is absolute or climbs out of the dataset
    root (``..``, or a symlink) raises DataError naming the list file and the line.
    """
    list_path = split_list_path(root, split)
    if not os.path.isfile(list_path):
        return None
    real_root = os.path.realpath(root)
    _check_inside(list_path, real_root, "split list")
    split_dir = os.path.join(root, split)
    names: list[str] = []
    seen = set()
    try:
        with open(list_path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(list_path, f"unreadable split list ({err})") from None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"[\\/]+", line)
        if os.path.isabs(line) or ".." in parts:
            raise DataError(list_path, f"line {number}: '{line}' points outside the dataset root")
        # A plain name is looked up in the index, whose entries were symlink-checked when scanned; only
        # a nested path (a/b) can reach somewhere else and is resolved here.
        candidate = os.path.join(split_dir, line)
        if len(parts) > 1 and os.path.lexists(candidate) and not _is_inside(candidate, real_root):
            raise DataError(list_path, f"line {number}: '{line}' resolves to "
                                       f"{os.path.realpath(candidate)}, outside the dataset root")
        name = _listed_video_name(line)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def list_split(root: str | os.PathLike, split: str, use_cache: bool = True) -> list[VideoEntry]:
    """Videos of ``split``: all of them sorted by name, or those of ``ROOT/<split>_files.txt`` in its
    order. A listed video that does not exist raises DataError naming the list file."""
    root = os.path.abspath(os.fspath(root))
    entries = index_split(root, split, use_cache=use_cache)
    listed = read_split_list(root, split)
    if listed is None:
        return entries
    by_name = {e.name: e for e in entries}
    missing = [n for n in listed if n not in by_name]
    if missing:
        raise DataError(split_list_path(root, split),
                        f"{len(missing)} listed video(s) not found in split '{split}': "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if not listed:
        raise DataError(split_list_path(root, split), f"split list is empty: split '{split}' has no videos")
    return [by_name[n] for n in listed]
