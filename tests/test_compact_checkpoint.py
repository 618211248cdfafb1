"""The shipped default checkpoint is compact (since session 27): checkpoints/default is a student distilled from
checkpoints/full by ``smokeflow distill-student``, with a detail copy of its own; a whole checkpoint folder, about
a third of the full network's work per step, and it samples as the full one does (same noise, same observed
frame)."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(scope="module")
def pipelines(repo_root):
    from smokeflow.pipeline import SmokeFlow

    return (SmokeFlow.from_pretrained(os.path.join(repo_root, "checkpoints", "full")),
            SmokeFlow.from_pretrained(os.path.join(repo_root, "checkpoints", "default")))


def _smoke_frame() -> np.ndarray:
    """A plume-like frame: a bright column on black, wider at the top (the model's own kind of input)."""
    frame = np.zeros((1, 64, 64, 3), np.uint8)
    for y in range(20, 60):
        half = 3 + (60 - y) // 6
        frame[0, y, 32 - half:32 + half] = 150
    return frame


def test_the_default_network_does_about_a_third_of_the_full_ones_work(pipelines):
    full, compact = pipelines
    big, small = full.flow.model, compact.flow.model
    assert (len(small.in_blocks), len(small.mid_blocks), len(small.out_blocks)) == (1, 0, 1)
    assert small.config.inner_dim == big.config.inner_dim
    assert small.flops_per_call(1) < 0.4 * big.flops_per_call(1)
    assert compact.flow.has_detail  # its own detail copy, of its own shape


def test_the_default_detail_copy_blends_in_below_the_default_warm_start(pipelines):
    """auto detail: none at s = 0.2 (the network as distilled), 0.25 at s = 0.1, and the blend changes the rollout."""
    _, compact = pipelines
    observed = _smoke_frame()
    assert compact.predict(observed, num_frames=2, seed=0).detail == 0.0
    auto = compact.predict(observed, num_frames=2, seed=0, warm_start=0.1)
    plain = compact.predict(observed, num_frames=2, seed=0, warm_start=0.1, detail=0)
    assert auto.detail == 0.25 and plain.detail == 0.0
    assert not np.array_equal(auto.frames, plain.frames)


def test_the_default_checkpoint_samples_as_the_full_one_does(pipelines):
    """Same noise, same observed frame: the compact rollout is nearer the full network's than the full one's own
    rollout from other noise is (over the 9 frames), and at the first frame within a few grey levels of it."""
    full, compact = pipelines
    observed = _smoke_frame()
    a = full.predict(observed, num_frames=9, seed=0).frames[0].astype(float)
    b = compact.predict(observed, num_frames=9, seed=0).frames[0].astype(float)
    other = full.predict(observed, num_frames=9, seed=10).frames[0].astype(float)
    psnr = lambda x, y: 10 * np.log10(255 ** 2 / max(((x - y) ** 2).mean(), 1e-12))  # noqa: E731
    assert psnr(a[0], b[0]) > 32
    same_noise = np.mean([psnr(a[f], b[f]) for f in range(9)])
    other_noise = np.mean([psnr(a[f], other[f]) for f in range(9)])
    assert same_noise > other_noise + 0.5  # the network's own sample, not just another plausible one
    assert b[-1].mean() > 0.5 * a[-1].mean()  # the smoke is still there at frame 9


def test_the_full_checkpoint_runs_in_int8(repo_root):
    """The default's int8 path is tested in test_int8_velocity; the full network's here."""
    from smokeflow.pipeline import SmokeFlow

    int8 = SmokeFlow.from_pretrained(os.path.join(repo_root, "checkpoints", "full"), int8=True)
    result = int8.predict(_smoke_frame(), num_frames=3, seed=0)
    assert int8.flow.int8 and result.frames.shape == (1, 3, 64, 64, 3)
