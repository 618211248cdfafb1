"""A 2-D incompressible smoke solver, batched over sequences (torch, CPU or GPU).

The fluid lives on a periodic ``H x W`` grid of unit cells (row index grows downwards, so "up" is
``-y``). A sequence's state is a velocity perturbation ``velocity`` [B,2,H,W] (channel 0 = x/column
velocity, channel 1 = y/row velocity, in cells per unit time), a smoke ``density`` [B,1,H,W] (>= 0) and a
``temperature`` excess [B,1,H,W]. The wind is a background flow ``U(y) * x_hat + V * y_hat`` that is
added to the perturbation when things are advected; it is divergence-free by construction (U depends
only on y), so the projection never touches it.

One step (:meth:`SmokeSolver.step`) does, in order:

1. semi-Lagrangian advection of velocity, temperature and density along the total flow (MacCormack
   correction for density and temperature, limited so it never creates new extrema, keeps plumes sharp);
2. forces: buoyancy from temperature (minus the weight of the smoke), vorticity confinement (puts back
   the small swirls that numerical diffusion removes), a smooth random stirring;
3. sources: stacks add smoke and heat and push gas out of their mouth;
4. sponge layers near the top and side edges absorb whatever leaves the visible window, so the periodic
   domain behaves like an open one (nothing wraps around);
5. pressure projection: an exact FFT Poisson solve that makes the forward-difference divergence of the
   velocity zero to round-off (see :func:`project_divergence_free`).

Everything is elementwise, grid_sample or a batched FFT, so a sequence's result does not depend on
which other sequences share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def forward_divergence(velocity: torch.Tensor) -> torch.Tensor:
    """Forward-difference divergence on the periodic grid.

    velocity: float [B,2,H,W] (x then y component). Returns [B,1,H,W]:
    ``u[i,j+1] - u[i,j] + v[i+1,j] - v[i,j]``.
    """
    u, v = velocity[:, 0:1], velocity[:, 1:2]
    return (torch.roll(u, -1, dims=-1) - u) + (torch.roll(v, -1, dims=-2) - v)


def project_divergence_free(velocity: torch.Tensor) -> torch.Tensor:
    """Remove the gradient part of ``velocity`` [B,2,H,W] exactly (periodic grid), keeping its mean.

    Solves ``D G p = D u`` in Fourier space, with D the forward-difference divergence and G the
    backward-difference gradient (together they form the standard 5-point Laplacian, like a staggered
    MAC grid, so there are no checkerboard modes), then returns ``u - G p``, whose forward divergence
    is zero up to float round-off. The mean flow (the k=0 mode) is left unchanged.
    """
    height, width = velocity.shape[-2:]
    spectrum = torch.fft.rfft2(velocity)  # [B,2,H,W//2+1]
    kx = 2.0 * torch.pi * torch.fft.rfftfreq(width, device=velocity.device, dtype=velocity.dtype)
    ky = 2.0 * torch.pi * torch.fft.fftfreq(height, device=velocity.device, dtype=velocity.dtype)
    # Fourier symbol of the forward difference: e^{ik} - 1; the backward gradient's is -conj of it.
    ax = torch.polar(torch.ones_like(kx), kx) - 1.0  # [W//2+1]
    ay = torch.polar(torch.ones_like(ky), ky) - 1.0  # [H]
    ax = ax.view(1, -1)
    ay = ay.view(-1, 1)
    laplacian = -(ax.abs() ** 2 + ay.abs() ** 2)  # [H,W//2+1], eigenvalues of the 5-point Laplacian
    laplacian[0, 0] = 1.0  # the mean has no pressure; avoid 0/0
    div_hat = ax * spectrum[:, 0] + ay * spectrum[:, 1]
    pressure_hat = div_hat / laplacian
    pressure_hat[..., 0, 0] = 0.0
    u_hat = spectrum[:, 0] + ax.conj() * pressure_hat  # u - G_x p, G_x symbol = -conj(ax)
    v_hat = spectrum[:, 1] + ay.conj() * pressure_hat
    return torch.fft.irfft2(torch.stack([u_hat, v_hat], dim=1), s=(height, width))


def laplacian(field: torch.Tensor) -> torch.Tensor:
    """5-point Laplacian of [B,C,H,W] on the periodic grid."""
    return (torch.roll(field, 1, dims=-1) + torch.roll(field, -1, dims=-1) + torch.roll(field, 1, dims=-2)
            + torch.roll(field, -1, dims=-2) - 4.0 * field)


def curl(velocity: torch.Tensor) -> torch.Tensor:
    """Vorticity dv/dx - du/dy of [B,2,H,W] by central differences; returns [B,1,H,W]."""
    u, v = velocity[:, 0:1], velocity[:, 1:2]
    dv_dx = 0.5 * (torch.roll(v, -1, dims=-1) - torch.roll(v, 1, dims=-1))
    du_dy = 0.5 * (torch.roll(u, -1, dims=-2) - torch.roll(u, 1, dims=-2))
    return dv_dx - du_dy


def vorticity_confinement_force(velocity: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Fedkiw-style confinement force [B,2,H,W]: eps * (N x omega), N = grad|omega| / |grad|omega||.

    strength: [B,1,1,1] per sequence (cells per unit time squared, scaled by the vorticity).
    """
    omega = curl(velocity)
    magnitude = omega.abs()
    gx = 0.5 * (torch.roll(magnitude, -1, dims=-1) - torch.roll(magnitude, 1, dims=-1))
    gy = 0.5 * (torch.roll(magnitude, -1, dims=-2) - torch.roll(magnitude, 1, dims=-2))
    norm = torch.sqrt(gx * gx + gy * gy) + 1e-6
    nx, ny = gx / norm, gy / norm
    # In 2-D, N x (omega z_hat) = (ny * omega, -nx * omega).
    return strength * torch.cat([ny * omega, -nx * omega], dim=1)


class GridSampler:
    """Bilinear sampling of [B,C,H,W] fields at positions given in cell coordinates.

    Positions are turned into a grid_sample grid once (:meth:`grid`) so that several fields sampled at
    the same points share it (grid_sample's cost grows with the channels, building a grid is not free).
    Samples outside the grid take the nearest border value (the sponges make borders quiet anyway).
    """

    def __init__(self, height: int, width: int, device, dtype):
        self.height, self.width = height, width
        rows = torch.arange(height, device=device, dtype=dtype)
        cols = torch.arange(width, device=device, dtype=dtype)
        self.y, self.x = torch.meshgrid(rows, cols, indexing="ij")  # [H,W] each

    def grid(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cell coordinates x, y [B,H,W] -> grid_sample grid [B,H,W,2] (align_corners=True: -1..1 spans
        the cell centres 0..W-1)."""
        grid = torch.empty(*x.shape, 2, device=x.device, dtype=x.dtype)
        grid[..., 0] = x * (2.0 / (self.width - 1)) - 1.0
        grid[..., 1] = y * (2.0 / (self.height - 1)) - 1.0
        return grid

    @staticmethod
    def sample(field: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """field [B,C,H,W] at grid [B,H,W,2] -> [B,C,H,W]."""
        return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)

    def back_trace(self, velocity: torch.Tensor, dt: torch.Tensor):
        """Departure points (x, y), each [B,H,W], of a midpoint (RK2) back trace along ``velocity``
        [B,2,H,W] over ``dt`` [B,1,1,1]."""
        step = dt[:, 0]  # [B,1,1]
        x_mid = self.x - 0.5 * step * velocity[:, 0]
        y_mid = self.y - 0.5 * step * velocity[:, 1]
        mid_velocity = self.sample(velocity, self.grid(x_mid, y_mid))
        return self.x - step * mid_velocity[:, 0], self.y - step * mid_velocity[:, 1]


@dataclass
class SmokeForcing:
    """What drives the fluid during one step; every tensor is per sequence.

    wind_x: [B,1,H,1] horizontal background wind per row (cells per unit time; may grow with height).
    wind_y: [B,1,1,1] vertical background wind (small).
    source_density, source_heat: [B,1,H,W] smoke and heat added per unit time (stack mouths, puffs).
    source_upward_speed: [B,1,H,W] upward exit speed the stack mouths impose on the vertical velocity,
    blended in with weight ``source_weight`` [B,1,H,W] in [0,1] (0 away from the mouths).
    stirring: [B,2,H,W] random body force (turbulence the grid is too coarse to resolve).
    extra_dissipation: [B,1,1,1] fraction of smoke lost per unit time on top of the physics' own dissipation
    during this step (fading scenes; 0 for the others).
    """

    wind_x: torch.Tensor
    wind_y: torch.Tensor
    source_density: torch.Tensor
    source_heat: torch.Tensor
    source_upward_speed: torch.Tensor
    source_weight: torch.Tensor
    stirring: torch.Tensor
    extra_dissipation: torch.Tensor | float = 0.0


@dataclass
class SmokePhysics:
    """Per-sequence physical constants, each [B,1,1,1] float.

    buoyancy: upward acceleration per unit temperature; smoke_weight: downward acceleration per unit
    density; cooling: fraction of heat lost per unit time; dissipation: fraction of smoke lost per unit
    time; mixing: eddy diffusivity of smoke and heat (cells^2 per unit time; widens plumes the way
    unresolved turbulence entrains air); confinement: vorticity confinement strength; drag: fraction
    of the velocity perturbation lost per unit time (keeps old swirls from growing forever).
    """

    buoyancy: torch.Tensor
    smoke_weight: torch.Tensor
    cooling: torch.Tensor
    dissipation: torch.Tensor
    mixing: torch.Tensor
    confinement: torch.Tensor
    drag: torch.Tensor


def sponge_profile(height: int, width: int, top: int, sides: int, device, dtype) -> torch.Tensor:
    """Absorption weight [1,1,H,W] in [0,1]: 1 deep in the top/side margins, 0 in the interior.

    Rises smoothly (squared ramp) over ``top`` rows from the top edge and ``sides`` columns from each side.
    Nothing is absorbed at the bottom: smoke rises, and the top sponge stops it wrapping round.
    """
    rows = torch.arange(height, device=device, dtype=dtype).view(-1, 1)
    cols = torch.arange(width, device=device, dtype=dtype).view(1, -1)
    top_ramp = torch.clamp(1.0 - rows / max(top, 1), 0.0, 1.0) ** 2
    side_distance = torch.minimum(cols, (width - 1) - cols)
    side_ramp = torch.clamp(1.0 - side_distance / max(sides, 1), 0.0, 1.0) ** 2
    return torch.maximum(top_ramp, side_ramp).view(1, 1, height, width)


class SmokeSolver:
    """Steps a batch of smoke simulations on a periodic grid with absorbing top and side margins.

    state tensors: velocity [B,2,H,W], density [B,1,H,W], temperature [B,1,H,W], all float32.
    """

    def __init__(self, batch: int, height: int, width: int, sponge_top: int, sponge_sides: int,
                 device="cpu", dtype=torch.float32):
        self.batch, self.height, self.width = batch, height, width
        self.device, self.dtype = torch.device(device), dtype
        self.sampler = GridSampler(height, width, self.device, dtype)
        # Absorption rate per unit time at full sponge weight: strong enough that smoke dies within a
        # few cells of entering the outer band.
        self.sponge = sponge_profile(height, width, sponge_top, sponge_sides, self.device, dtype) * 1.5
        self.velocity = torch.zeros(batch, 2, height, width, device=self.device, dtype=dtype)
        self.density = torch.zeros(batch, 1, height, width, device=self.device, dtype=dtype)
        self.temperature = torch.zeros(batch, 1, height, width, device=self.device, dtype=dtype)

    def total_velocity(self, forcing: SmokeForcing) -> torch.Tensor:
        """Perturbation plus background wind, [B,2,H,W]."""
        wind = torch.cat([forcing.wind_x.expand(-1, -1, -1, self.width),
                          forcing.wind_y.expand(-1, -1, self.height, self.width)], dim=1)
        return self.velocity + wind

    def _maccormack_correct(self, field: torch.Tensor, predicted: torch.Tensor, flow: torch.Tensor,
                            dt: torch.Tensor, departure) -> torch.Tensor:
        """MacCormack correction of a semi-Lagrangian result ``predicted`` of ``field`` [B,C,H,W].

        Advects the prediction back (forward Euler trace) and adds half the round-trip error; the result
        is clamped to the values of the 2x2 cell block it was interpolated from, so it never makes new
        extrema (which would show as ringing and negative smoke).
        """
        step = dt[:, 0]
        forward = self.sampler.grid(self.sampler.x + step * flow[:, 0], self.sampler.y + step * flow[:, 1])
        round_trip = self.sampler.sample(predicted, forward)
        corrected = predicted + 0.5 * (field - round_trip)
        # Block minima/maxima (block = cell and its right/lower neighbours), read at the block's
        # top-left corner: bilinear sampling at integer coordinates returns that value exactly.
        padded = F.pad(field, (0, 1, 0, 1), mode="replicate")
        corners = (padded[..., :-1, :-1], padded[..., 1:, :-1], padded[..., :-1, 1:], padded[..., 1:, 1:])
        block_max = torch.maximum(torch.maximum(corners[0], corners[1]),
                                  torch.maximum(corners[2], corners[3]))
        block_min = torch.minimum(torch.minimum(corners[0], corners[1]),
                                  torch.minimum(corners[2], corners[3]))
        x, y = departure
        corner_grid = self.sampler.grid(torch.floor(x).clamp(0, self.width - 1),
                                        torch.floor(y).clamp(0, self.height - 1))
        bounds = self.sampler.sample(torch.cat([block_min, block_max], dim=1), corner_grid)
        channels = field.shape[1]
        return torch.minimum(torch.maximum(corrected, bounds[:, :channels]), bounds[:, channels:])

    def step(self, dt: torch.Tensor, forcing: SmokeForcing, physics: SmokePhysics) -> None:
        """Advance every sequence by its own time step ``dt`` [B,1,1,1] (unit-time = one cell at speed 1)."""
        flow = self.total_velocity(forcing)
        departure = self.sampler.back_trace(flow, dt)

        # 1. advection: one bilinear sample of all fields at the departure points. Velocity and
        #    temperature stay plain semi-Lagrangian (their smoothing is harmless); density, the only
        #    field we see, gets the MacCormack correction so plume edges stay crisp.
        fields = torch.cat([self.velocity, self.temperature, self.density], dim=1)
        advected = self.sampler.sample(fields, self.sampler.grid(*departure))
        velocity, temperature = advected[:, 0:2], advected[:, 2:3]
        density = self._maccormack_correct(self.density, advected[:, 3:4], flow, dt, departure)

        # 2. forces. Up is -y, so buoyancy pushes v negative.
        lift = physics.buoyancy * temperature - physics.smoke_weight * density
        velocity = velocity + dt * torch.cat([torch.zeros_like(lift), -lift], dim=1)
        velocity = velocity + dt * vorticity_confinement_force(velocity, physics.confinement)
        velocity = velocity + dt * forcing.stirring
        velocity = velocity * torch.exp(-physics.drag * dt)

        # 3. sources: add smoke and heat; stack mouths impose their vertical exit speed (up is -y) and
        #    leave the horizontal velocity to the wind, which bends the plume right at the mouth.
        density = density + dt * forcing.source_density
        temperature = temperature + dt * forcing.source_heat
        vertical = velocity[:, 1:2]
        vertical = vertical + forcing.source_weight * (-forcing.source_upward_speed - vertical)
        velocity = torch.cat([velocity[:, 0:1], vertical], dim=1)

        # 4. turbulent mixing (explicit diffusion, stable while mixing * dt <= 0.25), dissipation, cooling
        #    and the absorbing sponges.
        scalars = torch.cat([density, temperature], dim=1)
        scalars = scalars + torch.clamp(physics.mixing * dt, max=0.25) * laplacian(scalars)
        density, temperature = scalars[:, 0:1], scalars[:, 1:2]
        density = density * torch.exp(-(physics.dissipation + forcing.extra_dissipation + self.sponge) * dt)
        temperature = temperature * torch.exp(-(physics.cooling + self.sponge) * dt)
        velocity = velocity * torch.exp(-self.sponge * dt)

        # 5. projection.
        self.velocity = project_divergence_free(velocity)
        self.density = density.clamp_(min=0.0)
        self.temperature = temperature
