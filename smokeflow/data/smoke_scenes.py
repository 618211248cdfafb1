"""Random smoke scenes (stacks, puffs, wind, colour) and their rendering to 64x64 smoke-on-black frames.

A scene is drawn from one sequence's own random generator (:func:`draw_scene`), so a sequence looks
the same whatever batch or worker simulates it. :class:`SceneBatch` turns a list of scenes into the
per-step forcing tensors the solver needs; :func:`render_frames` turns smoke density into RGB frames the
way the users' extraction does (density -> opacity, times a smoke colour, on black, plus specks of
extraction noise).

Geometry (cells of the solver grid; rows grow downwards):
the grid is ``GRID x GRID`` and periodic; the camera sees the window ``VIEW x VIEW`` starting at
row ``VIEW_TOP``, column ``VIEW_LEFT``. Above and beside the window lie absorbing margins; below it a
few rows where stacks may stand hidden, so their smoke enters from the bottom edge.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from smokeflow.data.smoke_solver import SmokeForcing, SmokePhysics

# The view is 84 cells for 64 pixels (1.3 cells per pixel: finer than the frames, so thin plume edges
# are resolved, yet cheap enough for 1,000 sequences in a few minutes on two cores).
GRID = 112
VIEW = 84
VIEW_TOP = 20
VIEW_LEFT = (GRID - VIEW) // 2
SPONGE_TOP = 16
SPONGE_SIDES = 10
MAX_SOURCES = 3
STIRRING_RES = 8
# Solver steps before frame 0 (plumes must already be developed) and between consecutive frames.
WARMUP_STEPS = 40
WARMUP_DT = 2.5
STEPS_PER_FRAME = 2


@dataclass
class Scene:
    """Everything random about one sequence (numpy, float64 unless noted). S = total solver steps.

    Sources (K = MAX_SOURCES slots; an unused slot has zero rates): ``source_x``, ``source_y``,
    ``source_radius`` [K] in cells; ``density_rate``, ``heat_rate`` [S,K] per unit time;
    ``exit_speed`` [K] cells per unit time.
    Wind: ``wind_x`` [S], scaled by a profile growing with height h (0 at the bottom row, 1 at the top):
    ``0.25 + sqrt(h) * (0.75 + wind_shear * h)``; ``wind_y`` a small constant vertical drift.
    ``dt`` [S]: time step of each solver step (sets how fast the sequence moves per frame).
    ``stirring`` float32 [S,2,STIRRING_RES,STIRRING_RES]: coarse random force, smooth in time.
    Physics constants (see :class:`SmokePhysics`). Rendering: ``colour`` [3] in 0..1 (brightest channel
    1), ``brightness`` in 0..1, ``shading`` in 0..1 (how much smoke is darkened by the smoke above it,
    lit from the sky), ``opacity_gain``, ``edge_cut`` (opacity below it is lost, as in the users'
    extraction), ``render_seed`` for the noise specks.
    """

    source_x: np.ndarray
    source_y: np.ndarray
    source_radius: np.ndarray
    density_rate: np.ndarray
    heat_rate: np.ndarray
    exit_speed: np.ndarray
    wind_x: np.ndarray
    wind_shear: float
    wind_y: float
    dt: np.ndarray
    stirring: np.ndarray
    buoyancy: float
    smoke_weight: float
    cooling: float
    dissipation: float
    mixing: float
    confinement: float
    drag: float
    colour: np.ndarray
    brightness: float
    shading: float
    opacity_gain: float
    edge_cut: float
    speck_rate: float
    pixel_noise: float
    render_seed: int
    # Fading scenes only (make_fading): extra smoke loss per unit time at each solver step, [steps].
    fade_dissipation: np.ndarray | None = None


def total_steps(num_frames: int) -> int:
    """Solver steps needed for ``num_frames`` frames: the warm-up, then STEPS_PER_FRAME per frame."""
    return WARMUP_STEPS + STEPS_PER_FRAME * (num_frames - 1) + 1


def _smooth_noise(rng: np.random.Generator, steps: int, correlation_steps: float) -> np.ndarray:
    """Ornstein-Uhlenbeck noise [steps] with unit variance and the given correlation time."""
    keep = np.exp(-1.0 / max(correlation_steps, 1e-3))
    out = np.empty(steps)
    value = rng.standard_normal()
    for i in range(steps):
        value = keep * value + np.sqrt(1.0 - keep * keep) * rng.standard_normal()
        out[i] = value
    return out


def _draw_wind(rng: np.random.Generator, steps: int, sign: float, must_blow: bool = False) -> np.ndarray:
    """Horizontal wind [steps] (scaled by the height profile), blowing towards ``sign`` (+1 = right):
    calm, steady, gusty or turning (swinging through calm to the other side). ``must_blow`` leaves out
    calm and turning winds (for stacks beside the view, whose smoke the wind must carry in)."""
    if must_blow:
        kind = rng.choice(["steady", "gusty"])
    else:
        kind = rng.choice(["calm", "steady", "gusty", "turning"], p=[0.15, 0.35, 0.35, 0.15])
    if kind == "calm":
        return np.full(steps, sign * rng.uniform(0.0, 0.1)) + 0.03 * _smooth_noise(rng, steps, 30)
    speed = sign * np.exp(rng.uniform(np.log(0.3 if must_blow else 0.1), np.log(1.4)))
    if kind == "steady":
        return np.full(steps, speed) * (1.0 + 0.08 * _smooth_noise(rng, steps, 40))
    if kind == "gusty":
        gust = rng.uniform(0.3, 0.9) * _smooth_noise(rng, steps, rng.uniform(6, 30))
        return speed * (1.0 + gust)
    period = rng.uniform(100, 300)
    phase = rng.uniform(-0.3 * np.pi, 0.3 * np.pi)  # starts blowing towards ``sign``
    return speed * np.cos(phase + 2 * np.pi * np.arange(steps) / period)


def _draw_colour(rng: np.random.Generator) -> np.ndarray:
    """Smoke colour [3] with brightest channel 1. Mostly bluish grey, as the users' webcam smoke
    (their mean smoke RGB runs from about (25,40,75) to (105,130,155)); some neutral white/grey, some
    slightly brown."""
    family = rng.choice(["blue", "grey", "brown"], p=[0.75, 0.15, 0.10])
    if family == "blue":
        tint = rng.uniform(0.5, 1.0)
        target = np.array([0.3, 0.55, 1.0])
    elif family == "brown":
        tint = rng.uniform(0.2, 0.8)
        target = np.array([1.0, 0.82, 0.6])
    else:
        tint = rng.uniform(0.0, 1.0)
        target = np.array([0.85, 0.92, 1.0])
    colour = (1.0 - tint) * np.ones(3) + tint * target
    return colour / colour.max()


def draw_scene(rng: np.random.Generator, num_frames: int, fading: float = 0.0) -> Scene:
    """Draw one random scene for a sequence of ``num_frames`` frames from ``rng``.

    fading: share of scenes (in [0, 1]) made to fade, see :func:`make_fading`. The choice is drawn after every
    other draw of the scene, and only when ``fading`` > 0, so the scenes that do not fade are the very scenes
    ``fading`` = 0 draws (the same seed gives the same dataset plus fading variants of some of its videos).
    """
    if not 0.0 <= fading <= 1.0:
        raise ValueError(f"fading must be a share in [0, 1], got {fading}")
    steps = total_steps(num_frames)
    view_bottom = VIEW_TOP + VIEW - 1

    # Sources: 1-3 stacks standing together near the bottom of the view, or hidden below it or just
    # beside it (their smoke enters from an edge), emitting steadily, unsteadily, or in puffs.
    num_sources = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    placement = rng.choice(["inside", "below", "side"], p=[0.6, 0.25, 0.15])
    view_right = VIEW_LEFT + VIEW - 1
    wind_sign = rng.choice([-1.0, 1.0])
    if placement == "side":
        # Just outside the left or right edge, with the wind blowing the smoke into view.
        from_left = wind_sign > 0
        cluster_x = VIEW_LEFT - rng.uniform(1, 5) if from_left else view_right + rng.uniform(1, 5)
        cluster_y = rng.uniform(VIEW_TOP + VIEW * 0.45, view_bottom)
    elif placement == "below":
        cluster_x = rng.uniform(VIEW_LEFT + 4, view_right - 4)
        cluster_y = rng.uniform(view_bottom + 2, GRID - 3)
    else:
        cluster_x = rng.uniform(VIEW_LEFT + 7, view_right - 7)
        cluster_y = rng.uniform(view_bottom - 26, view_bottom - 3)
    source_x = np.zeros(MAX_SOURCES)
    source_y = np.zeros(MAX_SOURCES)
    source_radius = np.ones(MAX_SOURCES)
    exit_speed = np.zeros(MAX_SOURCES)
    density_rate = np.zeros((steps, MAX_SOURCES))
    heat_rate = np.zeros((steps, MAX_SOURCES))
    puffing = rng.random() < 0.15
    scale = np.exp(rng.uniform(np.log(0.6), np.log(1.45)))  # plant size: all its stacks alike
    late_start = rng.random() < 0.05  # emission begins during the sequence: a plume appears
    for k in range(num_sources):
        spread = 0.0 if k == 0 else 5.0 + 3.5 * scale
        source_x[k] = np.clip(cluster_x + rng.normal(0, spread), SPONGE_SIDES + 2, GRID - SPONGE_SIDES - 3)
        source_y[k] = np.clip(cluster_y + rng.normal(0, 0.5 * spread), VIEW_TOP + VIEW // 2, GRID - 3)
        source_radius[k] = scale * rng.uniform(0.8, 1.6)
        exit_speed[k] = rng.uniform(0.3, 2.0)
        # Big stacks make wider, not denser, plumes; several stacks share the output of one plant.
        base = np.sqrt(scale / num_sources) * rng.uniform(0.2, 0.6)
        if late_start:  # from shortly before frame 0 up to the middle of the sequence
            start = rng.integers(WARMUP_STEPS - 6, max(WARMUP_STEPS + (steps - WARMUP_STEPS) // 2,
                                                       WARMUP_STEPS - 5))
        else:
            start = rng.integers(0, WARMUP_STEPS // 4)
        if puffing:
            # Bursts: short pulses of heavy emission at random moments.
            pulses = (rng.random(steps) < rng.uniform(0.04, 0.12)).astype(float)
            width = rng.integers(2, 6)
            envelope = np.convolve(pulses, np.ones(width), mode="same")
            modulation = 3.0 * np.minimum(envelope, 1.0)
            modulation[start:start + width] = 3.0  # a first burst as soon as the stack starts
        else:
            unsteadiness = rng.uniform(0.0, 0.7)
            modulation = np.clip(1.0 + unsteadiness * _smooth_noise(rng, steps, rng.uniform(4, 25)), 0, None)
        modulation[:start] = 0.0
        density_rate[:, k] = base * modulation
        heat_rate[:, k] = rng.uniform(0.4, 1.5) * modulation

    wind_x = _draw_wind(rng, steps, wind_sign, must_blow=placement == "side")
    # Per-sequence motion speed: small dt = slow-moving frames. The warm-up always runs at a large
    # step (semi-Lagrangian advection is stable at any step) so plumes are developed by frame 0.
    frame_dt = np.exp(rng.uniform(np.log(0.7), np.log(3.2)))
    dt = np.full(steps, frame_dt)
    dt[:WARMUP_STEPS] = max(frame_dt, WARMUP_DT)

    coarse = rng.standard_normal((steps, 2, STIRRING_RES, STIRRING_RES))
    keep = 0.85  # correlated in time: the stirring drifts rather than flickers
    for i in range(1, steps):
        coarse[i] = keep * coarse[i - 1] + np.sqrt(1 - keep * keep) * coarse[i]
    stirring = (coarse * rng.uniform(0.0, 0.06)).astype(np.float32)

    scene = Scene(
        source_x=source_x, source_y=source_y, source_radius=source_radius,
        density_rate=density_rate, heat_rate=heat_rate, exit_speed=exit_speed,
        wind_x=wind_x, wind_shear=rng.uniform(0.0, 1.5), wind_y=rng.uniform(-0.08, 0.03), dt=dt,
        stirring=stirring,
        buoyancy=rng.uniform(0.04, 0.25), smoke_weight=rng.uniform(0.0, 0.02),
        cooling=rng.uniform(0.005, 0.03), dissipation=rng.uniform(0.002, 0.02),
        mixing=rng.uniform(0.0, 0.12),
        confinement=rng.uniform(0.02, 0.2), drag=rng.uniform(0.0, 0.02),
        colour=_draw_colour(rng), brightness=rng.uniform(0.7, 1.0), shading=rng.uniform(0.0, 0.4),
        opacity_gain=np.exp(rng.uniform(np.log(1.5), np.log(5.0))), edge_cut=rng.uniform(0.08, 0.25),
        speck_rate=rng.uniform(0.0, 4.0), pixel_noise=rng.uniform(0.0, 3.0),
        render_seed=int(rng.integers(0, 2**31 - 1)),
    )
    if fading > 0 and rng.random() < fading:
        scene = make_fading(scene, rng)
    return scene


# Share of its smoke a fading scene loses per frame (after the warm-up), drawn per scene.
FADING_LOSS_PER_FRAME = (0.02, 0.12)


def make_fading(scene: Scene, rng: np.random.Generator) -> Scene:
    """``scene`` turned into smoke that fades: its stacks stop emitting at a random moment between shortly
    before frame 0 and the middle of the sequence, and from then on its smoke dissipates fast (each frame loses
    a share in :data:`FADING_LOSS_PER_FRAME` on top of the ordinary 0.1-6 %), so the last puffs drift off and
    thin out.

    Why: smoke in real webcam footage often comes in detached puffs that drift off and thin out within a few
    frames (the RISE sample clip: mass 200 -> 80 over 8 frames), while every ordinary simulated plume is fed by
    a source and keeps its smoke. A model trained only on those keeps and even feeds real puffs.
    """
    steps = len(scene.dt)
    stop = int(rng.integers(WARMUP_STEPS - 2 * STEPS_PER_FRAME, WARMUP_STEPS + (steps - WARMUP_STEPS) // 2 + 1))
    emitting = np.flatnonzero(scene.density_rate.sum(axis=1) > 0)
    if len(emitting):  # a stack that starts late emits for a few frames before it stops
        stop = max(stop, int(emitting[0]) + 4 * STEPS_PER_FRAME)
    density_rate, heat_rate = scene.density_rate.copy(), scene.heat_rate.copy()
    density_rate[stop:] = 0.0
    heat_rate[stop:] = 0.0
    loss = rng.uniform(*FADING_LOSS_PER_FRAME)
    # The solver multiplies the density by exp(-dissipation * dt) at each step, STEPS_PER_FRAME steps a frame.
    fade = np.zeros(steps)
    fade[stop:] = -np.log1p(-loss) / (float(scene.dt[-1]) * STEPS_PER_FRAME)
    return dataclasses.replace(scene, density_rate=density_rate, heat_rate=heat_rate, fade_dissipation=fade)


class SceneBatch:
    """The scenes of one batch as tensors, giving the solver its forcing step by step."""

    def __init__(self, scenes: list[Scene], device="cpu", dtype=torch.float32):
        self.scenes = scenes
        self.device = torch.device(device)
        self.dtype = dtype

        def tensor(values) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values), dtype=dtype, device=self.device)

        rows = torch.arange(GRID, device=self.device, dtype=dtype)
        y, x = torch.meshgrid(rows, rows, indexing="ij")
        sx = tensor([s.source_x for s in scenes])[:, :, None, None]  # [B,K,1,1]
        sy = tensor([s.source_y for s in scenes])[:, :, None, None]
        radius = tensor([s.source_radius for s in scenes])[:, :, None, None]
        self.masks = torch.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * radius**2))  # [B,K,H,W]
        self.exit_speed = tensor([s.exit_speed for s in scenes])[:, :, None, None]
        self.density_rate = tensor(np.stack([s.density_rate for s in scenes], axis=1))  # [S,B,K]
        self.heat_rate = tensor(np.stack([s.heat_rate for s in scenes], axis=1))
        self.wind_x = tensor(np.stack([s.wind_x for s in scenes], axis=1))  # [S,B]
        # Wind grows with height (a boundary layer): about a third at the stack mouths, the full value
        # and more (shear) higher up, so plumes first rise and then bend over.
        height_above_bottom = (GRID - 1 - rows) / (GRID - 1)  # [H], 0 at the bottom row
        shear = tensor([s.wind_shear for s in scenes])[:, None]
        profile = 0.25 + torch.sqrt(height_above_bottom) * (0.75 + shear * height_above_bottom)
        self.wind_profile = profile[:, None, :, None]  # [B,1,H,1]
        self.wind_y = tensor([s.wind_y for s in scenes]).view(-1, 1, 1, 1)
        self.dt = tensor(np.stack([s.dt for s in scenes], axis=1))  # [S,B]
        self.stirring = tensor(np.stack([s.stirring for s in scenes], axis=1))  # [S,B,2,r,r]
        fades = [s.fade_dissipation for s in scenes]
        self.fade_dissipation = None if all(f is None for f in fades) else tensor(np.stack(
            [np.zeros(len(s.dt)) if f is None else f for s, f in zip(scenes, fades)], axis=1))  # [S,B]

        def per_sequence(name: str) -> torch.Tensor:
            return tensor([getattr(s, name) for s in scenes]).view(-1, 1, 1, 1)

        self.physics = SmokePhysics(
            buoyancy=per_sequence("buoyancy"), smoke_weight=per_sequence("smoke_weight"),
            cooling=per_sequence("cooling"), dissipation=per_sequence("dissipation"),
            mixing=per_sequence("mixing"),
            confinement=per_sequence("confinement"), drag=per_sequence("drag"),
        )

    def step_dt(self, step: int) -> torch.Tensor:
        """Time step of solver step ``step`` for each sequence, [B,1,1,1]."""
        return self.dt[step].view(-1, 1, 1, 1)

    def forcing(self, step: int) -> SmokeForcing:
        """The solver's forcing at solver step ``step``."""
        density_rate = self.density_rate[step][:, :, None, None]  # [B,K,1,1]
        heat_rate = self.heat_rate[step][:, :, None, None]
        active = (density_rate > 0).to(self.dtype) * self.masks  # mouths that are emitting now
        active_sum = active.sum(dim=1, keepdim=True)
        stirring = F.interpolate(self.stirring[step], size=(GRID, GRID), mode="bilinear",
                                 align_corners=False)
        return SmokeForcing(
            wind_x=self.wind_x[step].view(-1, 1, 1, 1) * self.wind_profile,
            wind_y=self.wind_y,
            source_density=(density_rate * self.masks).sum(dim=1, keepdim=True),
            source_heat=(heat_rate * self.masks).sum(dim=1, keepdim=True),
            source_upward_speed=(active * self.exit_speed).sum(dim=1, keepdim=True) / (active_sum + 1e-3),
            source_weight=torch.clamp(active_sum, 0.0, 1.0) * 0.8,
            stirring=stirring,
            extra_dissipation=0.0 if self.fade_dissipation is None else self.fade_dissipation[step].view(-1, 1, 1, 1),
        )


def render_frames(density: torch.Tensor, scenes: list[Scene], frame_index: int, size: int = 64) -> np.ndarray:
    """Render the camera window of ``density`` [B,1,GRID,GRID] as uint8 frames [B,size,size,3].

    Density is area-averaged to ``size`` x ``size``, turned into opacity ``1 - exp(-gain * density)``,
    cut below the scene's ``edge_cut`` (faint smoke the extraction loses), coloured and put on black;
    then pixel noise inside the smoke and a few specks of extraction noise are added.
    """
    # Light comes from above: the smoke column above a cell (including the margin above the view)
    # shadows it, so thick plumes get darker undersides and look round rather than flat.
    column = torch.cumsum(density[:, :, :VIEW_TOP + VIEW, VIEW_LEFT:VIEW_LEFT + VIEW], dim=2)[:, :, VIEW_TOP:]
    window = density[:, :, VIEW_TOP:VIEW_TOP + VIEW, VIEW_LEFT:VIEW_LEFT + VIEW]
    window = F.adaptive_avg_pool2d(window, size)[:, 0].cpu().numpy().astype(np.float64)  # [B,s,s]
    column = F.adaptive_avg_pool2d(column, size)[:, 0].cpu().numpy().astype(np.float64)
    frames = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for b, scene in enumerate(scenes):
        opacity = 1.0 - np.exp(-scene.opacity_gain * window[b])
        opacity = np.clip((opacity - scene.edge_cut) / (1.0 - scene.edge_cut), 0.0, 1.0) ** 0.6
        light = 1.0 - scene.shading * (1.0 - np.exp(-0.1 * scene.opacity_gain * column[b]))
        rgb = (opacity * light)[..., None] * (255.0 * scene.brightness * scene.colour)
        rng = np.random.default_rng([scene.render_seed, frame_index])
        rgb += rng.standard_normal(rgb.shape) * scene.pixel_noise * (opacity[..., None] > 0.02)
        # Specks: isolated pixels that the extraction mistook for smoke; half stay (static
        # background changes), half flicker from frame to frame.
        static = np.random.default_rng([scene.render_seed, 10**6])
        for generator, count in ((static, static.poisson(scene.speck_rate / 2)),
                                 (rng, rng.poisson(scene.speck_rate / 2))):
            ys = generator.integers(0, size, count)
            xs = generator.integers(0, size, count)
            rgb[ys, xs] += generator.uniform(10, 50, (count, 1)) * scene.colour
        frames[b] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return frames
