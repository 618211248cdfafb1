"""The smoke solver's physics and the simulator's determinism, shapes and value ranges."""

import numpy as np
import pytest
import torch

from smokeflow.data.dataset_stats import format_statistics, per_sequence_statistics, smoke_dataset_statistics
from smokeflow.data.simulate import simulate_indices, simulate_sequences
from smokeflow.data.smoke_solver import (
    SmokeForcing, SmokePhysics, SmokeSolver, forward_divergence, project_divergence_free,
)


def test_projection_removes_divergence_and_keeps_mean_flow():
    generator = torch.Generator().manual_seed(0)
    velocity = torch.randn(3, 2, 48, 64, generator=generator) + torch.tensor([0.7, -0.2]).view(1, 2, 1, 1)
    before = forward_divergence(velocity).abs().max().item()
    projected = project_divergence_free(velocity)
    after = forward_divergence(projected).abs().max().item()
    assert before > 1.0
    assert after < 1e-5 * before
    # The mean (wind) is untouched and projecting twice changes nothing.
    torch.testing.assert_close(projected.mean(dim=(2, 3)), velocity.mean(dim=(2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(project_divergence_free(projected), projected, atol=1e-5, rtol=0)


def _calm_forcing(batch, size):
    zeros = torch.zeros(batch, 1, size, size)
    return SmokeForcing(wind_x=torch.zeros(batch, 1, size, 1), wind_y=torch.zeros(batch, 1, 1, 1),
                        source_density=zeros, source_heat=zeros, source_upward_speed=zeros,
                        source_weight=zeros, stirring=torch.zeros(batch, 2, size, size))


def _physics(batch, **values):
    fields = dict(buoyancy=0.2, smoke_weight=0.0, cooling=0.0, dissipation=0.0, mixing=0.0, confinement=0.1,
                  drag=0.0)
    fields.update(values)
    return SmokePhysics(**{k: torch.full((batch, 1, 1, 1), float(v)) for k, v in fields.items()})


def _centre_of_mass_row(density):
    rows = torch.arange(density.shape[-2], dtype=density.dtype).view(1, 1, -1, 1)
    return ((density * rows).sum(dim=(1, 2, 3)) / density.sum(dim=(1, 2, 3))).numpy()


def test_hot_blob_rises_and_cold_blob_stays():
    size = 64
    solver = SmokeSolver(2, size, size, sponge_top=4, sponge_sides=4)
    y, x = torch.meshgrid(torch.arange(size.__float__()), torch.arange(size.__float__()), indexing="ij")
    blob = torch.exp(-((x - 32) ** 2 + (y - 48) ** 2) / (2 * 4.0**2))
    solver.density = blob.expand(2, 1, size, size).clone()
    solver.temperature = torch.stack([blob, torch.zeros_like(blob)]).unsqueeze(1)  # hot, cold
    start = _centre_of_mass_row(solver.density)
    for _ in range(30):
        solver.step(torch.full((2, 1, 1, 1), 0.5), _calm_forcing(2, size), _physics(2))
    end = _centre_of_mass_row(solver.density)
    assert start[0] - end[0] > 3.0, "the hot blob must rise (row index decreases)"
    assert abs(start[1] - end[1]) < 0.5, "a blob at ambient temperature must not move"
    assert forward_divergence(solver.velocity).abs().max() < 1e-4
    assert (solver.density >= 0).all()


def test_wind_carries_smoke_sideways():
    size = 64
    solver = SmokeSolver(1, size, size, sponge_top=4, sponge_sides=4)
    y, x = torch.meshgrid(torch.arange(size.__float__()), torch.arange(size.__float__()), indexing="ij")
    solver.density = torch.exp(-((x - 24) ** 2 + (y - 32) ** 2) / 18.0).view(1, 1, size, size)
    forcing = _calm_forcing(1, size)
    forcing.wind_x = torch.full((1, 1, size, 1), 1.0)
    cols = torch.arange(size, dtype=torch.float32)
    start = (solver.density.sum(dim=2) * cols).sum() / solver.density.sum()
    for _ in range(10):
        solver.step(torch.ones(1, 1, 1, 1), forcing, _physics(1, buoyancy=0.0))
    end = (solver.density.sum(dim=2) * cols).sum() / solver.density.sum()
    assert float(end - start) == pytest.approx(10.0, abs=1.0)


def test_simulation_shapes_dtype_and_determinism():
    first = simulate_sequences(3, 5, seed=7)
    assert first.shape == (3, 5, 64, 64, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, simulate_sequences(3, 5, seed=7))
    assert not np.array_equal(first, simulate_sequences(3, 5, seed=8))
    # A sequence does not depend on the batch it was simulated in.
    np.testing.assert_array_equal(simulate_indices(7, "train", [2], 5)[0], first[2])
    # Frames move but stay smooth: consecutive frames differ, yet far less than unrelated frames do.
    step = np.abs(np.diff(first.astype(int), axis=1)).mean()
    unrelated = np.abs(first[0].astype(int) - first[1].astype(int)).mean()
    assert 0 < step < unrelated


def test_other_sizes_render():
    frames = simulate_sequences(1, 2, seed=1, size=32)
    assert frames.shape == (1, 2, 32, 32, 3)


def test_statistics_of_a_small_generated_set_are_plausible():
    frames = simulate_sequences(16, 6, seed=3)
    stats = smoke_dataset_statistics(frames)
    assert stats["num_sequences"] == 16
    assert stats["sequences_without_smoke"] <= 2
    assert 0.003 < stats["smoke_fraction"]["p50"] < 0.35
    assert stats["smoke_fraction"]["p95"] < 0.6, "smoke must not fill the frame"
    # Dim smoke on black: smoke pixels are far from white on average, and blue is not below red.
    assert 15 < stats["smoke_rgb"]["b"]["p50"] < 200
    assert stats["smoke_rgb"]["b"]["mean"] >= stats["smoke_rgb"]["r"]["mean"]
    assert 0.05 < stats["frame_change"]["p50"] < 20
    assert 0.2 <= stats["touches_edge_fraction"] <= 1.0


def test_dataset_statistics_on_known_frames():
    frames = np.zeros((2, 3, 10, 10, 3), dtype=np.uint8)
    # Sequence 0: a 2x5 patch of (20,40,80) in the middle, moving right by one pixel per frame.
    for t in range(3):
        frames[0, t, 4:6, 2 + t:7 + t] = (20, 40, 80)
    # Sequence 1: a dim pixel below the threshold, plus smoke along the left edge in the last frame.
    frames[1, :, 5, 5] = (5, 5, 10)
    frames[1, 2, 0:4, 0] = (100, 100, 100)
    per_sequence = per_sequence_statistics(frames)
    np.testing.assert_allclose(per_sequence["smoke_fraction"], [10 / 100, 4 / 300])
    np.testing.assert_allclose(per_sequence["smoke_rgb"], [[20, 40, 80], [100, 100, 100]])
    # Each move changes 2x2 pixels (one column leaves, one enters) by the colour.
    moved = 2 * 2 * (20 + 40 + 80) / (10 * 10 * 3)
    appeared = 4 * 300 / (10 * 10 * 3)
    np.testing.assert_allclose(per_sequence["frame_change"], [moved, appeared / 2])
    assert per_sequence["touches_edge"].tolist() == [False, True]
    assert "rise" not in per_sequence  # motion is opt-in (simulate leaves it out)
    with_motion = per_sequence_statistics(frames, motion=True)
    assert 0.8 < with_motion["drift"][0] < 1.3 and abs(with_motion["rise"][0]) < 0.1  # moves right 1 px per frame
    table = format_statistics(smoke_dataset_statistics(frames))
    assert "smoke pixels, % of frame" in table and "touches an edge: 50 %" in table


def test_smoke_leaving_the_side_is_absorbed_not_wrapped_round():
    size = 64
    solver = SmokeSolver(1, size, size, sponge_top=8, sponge_sides=8)
    y, x = torch.meshgrid(torch.arange(size.__float__()), torch.arange(size.__float__()), indexing="ij")
    solver.density = torch.exp(-((x - 40) ** 2 + (y - 32) ** 2) / 18.0).view(1, 1, size, size)
    start_mass = solver.density.sum().item()
    forcing = _calm_forcing(1, size)
    forcing.wind_x = torch.full((1, 1, size, 1), 1.0)
    for _ in range(60):
        solver.step(torch.ones(1, 1, 1, 1), forcing, _physics(1, buoyancy=0.0))
    assert solver.density.sum().item() < 0.05 * start_mass
    assert solver.density[..., :, 8:40].max().item() < 1e-3, "smoke came back in from the other side"


def test_fading_scenes_lose_their_smoke_and_leave_the_others_unchanged():
    """--fading: the chosen scenes stop emitting and thin out; every other scene is the one fading = 0 draws."""
    plain = simulate_sequences(8, 20, seed=5, split="val")
    mixed = simulate_sequences(8, 20, seed=5, split="val", fading=0.5)
    faded = [i for i in range(8) if not np.array_equal(plain[i], mixed[i])]
    assert 0 < len(faded) < 8  # some chosen, not all
    all_fading = simulate_sequences(8, 20, seed=5, split="val", fading=1.0)
    mass = lambda video: video.astype(float).mean(axis=(1, 2, 3))  # noqa: E731
    for i in range(8):
        if i in faded:  # a fading scene is the same scene, fading being its only extra draw
            np.testing.assert_array_equal(all_fading[i], mixed[i])
    kept = np.mean([mass(plain[i])[-1] / max(mass(plain[i])[:3].max(), 1e-3) for i in range(8)])
    left = np.mean([mass(all_fading[i])[-1] / max(mass(all_fading[i])[:3].max(), 1e-3) for i in range(8)])
    assert left < 0.2 < kept  # ordinary plumes keep their smoke, fading ones lose most of it by frame 19
    with pytest.raises(ValueError, match="fading must be a share"):
        simulate_sequences(1, 3, seed=0, fading=1.5)
