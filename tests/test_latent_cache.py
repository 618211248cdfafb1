"""Latent cache: built once, reused, rebuilt when the checkpoint or the data change; LatentClipDataset items."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from smokeflow.cli import main
from smokeflow.data.latent_cache import LatentClipDataset, build_latent_cache, read_index
from smokeflow.data.layouts import list_videos, read_video_entry
from smokeflow.errors import DataError
from smokeflow.pipeline import SmokeFlow
from vqvae_helpers import tiny_checkpoint, tiny_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = str(tmp_path_factory.getbasetemp())
    shared = tiny_dataset(base)
    checkpoint = tiny_checkpoint(base, shared)
    # A private copy of the data: these tests modify a frame to check invalidation.
    data = str(tmp_path_factory.mktemp("cache") / "data")
    shutil.copytree(shared, data, ignore=shutil.ignore_patterns(".latents"))
    return checkpoint, data


def test_cache_matches_encoder_and_is_reused(setup, capsys):
    checkpoint, data = setup
    assert main(["encode-latents", "--checkpoint", checkpoint, "--data", data]) == 0
    out = capsys.readouterr().out
    assert "train: encoded 18 frames" in out and "val: encoded 12" in out and "test: encoded 12" in out
    index = read_index(os.path.join(data, ".latents", "train"))
    assert index["flips"] and index["shape"] == [16, 8, 8] and index["num_frames"] == 18

    pipe = SmokeFlow.from_pretrained(checkpoint)
    video = list_videos(data, "train")[1]
    frames = read_video_entry(video, 64)
    expected = pipe.encode(frames)
    expected_flipped = pipe.encode(np.ascontiguousarray(frames[:, :, ::-1]))
    dataset = LatentClipDataset(data, "train", frames_per_sample=6, windows="all")
    assert len(dataset) == 3 and dataset[1].shape == (6, 16, 8, 8) and dataset[1].dtype == torch.float32
    assert torch.allclose(dataset[1], expected, atol=2e-2)  # float16 storage
    flipped = LatentClipDataset(os.path.join(data, ".latents"), "train", 6, windows="all",
                                random_horizontal_flip=True, seed=0)
    plans = [flipped.clip_plan(i)[2] for i in range(3)]
    for i, flip in enumerate(plans):
        if i == 1:
            assert torch.allclose(flipped[1], expected_flipped if flip else expected, atol=2e-2)
    clips = LatentClipDataset(data, "train", frames_per_sample=3, skip_frames=1, windows="all")
    assert len(clips) == 3 * 2
    assert torch.allclose(clips[2], expected[[0, 2, 4]], atol=2e-2)  # video 1, first window, every 2nd frame

    assert main(["encode-latents", "--checkpoint", checkpoint, "--data", data, "--split", "train"]) == 0
    assert "train: cache up to date" in capsys.readouterr().out


def test_cache_rebuilt_when_data_or_checkpoint_change(setup, tmp_path):
    checkpoint, data = setup
    build_latent_cache(checkpoint, data, "test", progress=False)
    assert not build_latent_cache(checkpoint, data, "test", progress=False).rebuilt

    # Data change: one frame rewritten (brighter smoke) -> rebuilt, and the new latents differ.
    video = list_videos(data, "test")[0]
    path = video.frame_paths[2]
    old = LatentClipDataset(data, "test", 6, windows="all")[0]
    frame = np.asarray(Image.open(path)).astype(np.int32)
    Image.fromarray(np.clip(frame + 80, 0, 255).astype(np.uint8)).save(path)
    info = build_latent_cache(checkpoint, data, "test", progress=False)
    assert info.rebuilt and info.reason.startswith("the data changed")
    assert "6 frames of unchanged videos reused" in info.reason  # only the changed video was re-encoded
    new = LatentClipDataset(data, "test", 6, windows="all")[0]
    assert not torch.allclose(old[2], new[2]) and torch.allclose(old[0], new[0])

    # Checkpoint change: a copy of the checkpoint with different latent statistics -> rebuilt.
    other = str(tmp_path / "ckpt")
    shutil.copytree(checkpoint, other)
    from smokeflow.training.vqvae_trainer import load_latent_stats, save_latent_stats

    stats = load_latent_stats(os.path.join(other, "latent_stats.safetensors"))
    stats.std.mul_(2.0)
    save_latent_stats(stats, os.path.join(other, "latent_stats.safetensors"))
    info = build_latent_cache(other, data, "test", progress=False)
    assert info.rebuilt and info.reason == "the VQVAE checkpoint changed"  # nothing reusable
    assert torch.allclose(LatentClipDataset(data, "test", 6, windows="all")[0], new / 2.0, atol=2e-2)


def test_missing_cache_and_flips_are_clear_errors(setup, tmp_path):
    checkpoint, data = setup
    with pytest.raises(DataError, match="encode-latents"):
        LatentClipDataset(str(tmp_path), "train", 2)
    build_latent_cache(checkpoint, data, "val", progress=False)
    with pytest.raises(DataError, match="flipped latents"):
        LatentClipDataset(data, "val", 2, random_horizontal_flip=True)


def _copy_with_changed_tensor(checkpoint: str, folder: str, key: str) -> str:
    """A copy of ``checkpoint`` in ``folder`` whose weights tensor ``key`` is shifted by 0.01."""
    from smokeflow.training.checkpoint_io import load_weights, save_weights

    shutil.copytree(checkpoint, folder)
    weights = load_weights(os.path.join(folder, "vqvae.safetensors"))
    weights[key] = weights[key] + 0.01
    save_weights(weights, os.path.join(folder, "vqvae.safetensors"))
    return folder


def test_cache_key_covers_the_encoder_and_stats_only(setup, tmp_path):
    """Decoder or codebook changes (a decoder fine-tune) keep the cache; any encoder change rebuilds it."""
    from smokeflow.data.latent_cache import checkpoint_hash

    checkpoint, data = setup
    build_latent_cache(checkpoint, data, "val", progress=False)
    decoder_changed = _copy_with_changed_tensor(checkpoint, str(tmp_path / "dec"), "decoder.net.0.weight")
    codebook_changed = _copy_with_changed_tensor(checkpoint, str(tmp_path / "cb"), "quantizer.codebook")
    for other in (decoder_changed, codebook_changed):
        assert checkpoint_hash(other) == checkpoint_hash(checkpoint)
        assert not build_latent_cache(other, data, "val", progress=False).rebuilt
    encoder_changed = _copy_with_changed_tensor(checkpoint, str(tmp_path / "enc"), "encoder.net.0.bias")
    assert checkpoint_hash(encoder_changed) != checkpoint_hash(checkpoint)
    info = build_latent_cache(encoder_changed, data, "val", progress=False)
    assert info.rebuilt and info.reason == "the VQVAE checkpoint changed"


def test_cache_with_the_legacy_file_key_is_migrated_not_rebuilt(setup):
    """Caches built before the encoder-only key carry a hash of the checkpoint files: for the same
    checkpoint they are kept (index key rewritten, latents untouched); for another one they are rebuilt."""
    import json

    from smokeflow.data.latent_cache import checkpoint_hash, legacy_checkpoint_hash

    checkpoint, data = setup
    build_latent_cache(checkpoint, data, "test", progress=False)
    cache_dir = os.path.join(data, ".latents", "test")
    index_path = os.path.join(cache_dir, "index.json")
    index = read_index(cache_dir)
    index["checkpoint_hash"] = legacy_checkpoint_hash(checkpoint)
    with open(index_path, "w", encoding="utf-8") as fh:
        json.dump(index, fh)
    latents_mtime = os.stat(os.path.join(cache_dir, "latents.npy")).st_mtime_ns
    info = build_latent_cache(checkpoint, data, "test", progress=False)
    assert not info.rebuilt
    assert read_index(cache_dir)["checkpoint_hash"] == checkpoint_hash(checkpoint)
    assert os.stat(os.path.join(cache_dir, "latents.npy")).st_mtime_ns == latents_mtime

    index = read_index(cache_dir)
    index["checkpoint_hash"] = "0123456789abcdef"  # a legacy key of some other checkpoint
    with open(index_path, "w", encoding="utf-8") as fh:
        json.dump(index, fh)
    assert build_latent_cache(checkpoint, data, "test", progress=False).rebuilt
