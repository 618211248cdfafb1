"""``smokeflow extract``: raw webcam video -> smoke-on-black frames in the users' layout."""

from __future__ import annotations

import glob
import os

from smokeflow.errors import DataError

HELP = "Cut the smoke out of a raw video: static background removed, smoke on black, 64x64 PNG frames."


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, help="raw video file (.mp4 .webm .avi .mov .mkv .gif)")
    parser.add_argument("--out", required=True,
                        help="folder for <video>_frame_<NNNN>.png (e.g. a split folder DATA/train)")
    parser.add_argument("--crop", default=None, metavar="X,Y,W,H",
                        help="region of the raw frames to keep first, in pixels (default: whole frame)")
    parser.add_argument("--size", type=int, default=64, help="output frame size (default 64)")
    parser.add_argument("--video-name", default=None,
                        help="name of the video in the frame file names (default: the input file's stem)")
    parser.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    parser.add_argument("--preview", default=None,
                        help="contact sheet PNG, raw over extracted (default: OUT/<video>_preview.png)")
    parser.add_argument("--force", action="store_true",
                        help="replace frames of this video name that already exist in --out")


def parse_crop(text: str | None):
    """"x,y,w,h" -> (x, y, w, h) ints, or None."""
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0 or min(values[:2]) < 0:
        raise DataError(None, f"--crop must be X,Y,W,H in pixels with W,H > 0, got {text!r}")
    return values


def extract_video(path: str, crop=None, size: int = 64, progress: bool = False, max_frames: int | None = None):
    """:func:`smokeflow.data.extract.extract_smoke_from_video` with every problem (an unreadable video, a crop
    outside the frames, fewer than 3 frames) as a DataError naming the file."""
    from smokeflow.data.extract import extract_smoke_from_video

    try:
        return extract_smoke_from_video(path, crop=crop, size=size, progress=progress, max_frames=max_frames)
    except ValueError as err:
        if isinstance(err, DataError):
            raise
        raise DataError(path, str(err)) from None


def existing_frames(out: str, video: str) -> list[str]:
    pattern = os.path.join(glob.escape(out), f"{glob.escape(video)}_frame_*")
    return sorted(p for p in glob.glob(pattern) if not p.endswith(".tmp"))


def run(args) -> int:
    import numpy as np
    from PIL import Image

    from smokeflow.data.extract import preview_sheet
    from smokeflow.data.naming import FRAME_NAME_RE, write_video_pngs
    from smokeflow.data.smoke_mask import smoke_mask

    crop = parse_crop(args.crop)
    if args.size < 8:
        raise DataError(None, f"--size must be at least 8, got {args.size}")
    video = args.video_name or os.path.splitext(os.path.basename(args.input))[0]
    if not FRAME_NAME_RE.match(f"{video}_frame_0000.png") or os.sep in video or video.startswith("."):
        raise DataError(None, f"--video-name {video!r} is not usable in <video>_frame_<NNNN>.png names")
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(out, "--out exists and is not a folder")
    old = existing_frames(out, video)
    if old and not args.force:
        raise DataError(out, f"already holds {len(old)} frame(s) of video '{video}' "
                             f"(e.g. {os.path.basename(old[0])}); pass --force to replace them or choose "
                             f"another --video-name")
    if os.path.realpath(args.input).startswith(os.path.realpath(out) + os.sep) and \
            FRAME_NAME_RE.match(os.path.basename(args.input)):
        raise DataError(args.input, "the input is one of the frames this command would write")

    result = extract_video(args.input, crop=crop, size=args.size, progress=True, max_frames=args.max_frames)
    written = write_video_pngs(out, video, result.frames)
    for stale in set(old) - set(written):  # --force with a shorter clip: drop the old tail
        os.remove(stale)
    preview = args.preview or os.path.join(out, f"{video}_preview.png")
    Image.fromarray(preview_sheet(result)).save(preview)

    mask = smoke_mask(result.frames)
    change = np.abs(np.diff(result.frames.astype(np.float32), axis=0)).mean() if len(result.frames) > 1 else 0.0
    print(f"wrote {len(written)} frames {args.size}x{args.size} to {out}/{video}_frame_NNNN.png")
    print(f"preview: {preview}")
    print(f"smoke pixels: {100 * mask.mean():.1f} % (per frame {100 * mask.mean(axis=(1, 2)).min():.1f}-"
          f"{100 * mask.mean(axis=(1, 2)).max():.1f} %); mean |frame-to-frame change| {change:.2f}/255; "
          f"opacity ramp {result.noise_floor:.1f}->{result.saturation:.1f} (RGB distance)")
    return 0
