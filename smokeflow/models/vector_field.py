"""RIVER's vector field network v(x_t, t | z_ref, z_ctx, tau - c): a U-ViT style transformer over latent tokens.

Tokens. Each of the h*w latent positions becomes one token: the per-position concatenation
``[x_t, z_ref, z_ctx]`` (3*C channels) projected to ``inner_dim``, plus a learned 2-D position embedding and an
embedding of the index distance between the target frame and the context frame. One extra token carries the
flow time t. That is h*w + 1 tokens (65 for 8x8 latents).

"Do not recompute what does not change". The concatenation followed by one linear map equals the sum of three
linear maps, one per input: ``W [x; r; c] = W_x x + W_r r + W_c c``. Only ``W_x x_t`` changes across the N ODE
steps of one frame, so the sampler computes the conditioning part ``W_r z_ref + W_c z_ctx + pos + dist`` once
per frame (:meth:`VectorField.reference_tokens`, :meth:`VectorField.context_tokens`) and, when the context
frame is re-drawn at every network call, it projects every candidate context frame once and only indexes
the cache. Training uses the same maps through :meth:`VectorField.forward`.

Body. Pre-norm transformer blocks with U-ViT long skips: ``depth`` input blocks whose outputs are kept,
``mid_depth`` middle blocks, then ``depth`` output blocks that each first fuse the matching kept activation
(concat + linear). Attention uses ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


# Both GELU forms have no weights, so the choice only has to match what the model was trained with.
_ACTIVATIONS = {"gelu_tanh": lambda: nn.GELU(approximate="tanh"), "gelu": lambda: nn.GELU()}

PREDICTIONS = ("velocity", "data", "residual")
# Smallest 1 - t that divides a predicted clean latent into a velocity: the samplers stop short of t = 1 (Euler
# N = 10 last calls the network at t = 0.91), training draws t up to 1.
DATA_PREDICTION_MIN_GAP = 0.05


@dataclass
class VectorFieldConfig:
    """Settings of the vector field network (RIVER-compatible names).

    state_size: latent channels C; state_res: latent [h, w]; inner_dim: token width; depth: blocks in each
    half of the U (input and output); mid_depth: blocks in the middle; num_heads: attention heads;
    max_distance: largest index distance tau - c with its own embedding (larger ones are clamped);
    mlp_ratio: hidden width of the feed-forward part relative to inner_dim; activation: the feed-forward
    non-linearity, ``gelu_tanh`` (tanh approximation) or ``gelu`` (exact erf form, about 2x cheaper on CPU);
    warm_start_input: the network also sees the warm start s of the path it is on (not in RIVER; needed when it
    is trained on the warm-start path of :mod:`smokeflow.flow.path` for several s, which a state alone does not
    reveal). Off: the network and its weights are exactly RIVER's.
    prediction: what the head outputs. "velocity" (RIVER): the velocity itself. "data": the clean latent z,
    turned into the velocity the path needs, v = (z_hat - x_t) / (1 - t) (the sigma -> 0 form; sigma = 1e-7
    moves it by < 1e-6), with 1 - t clamped at :data:`DATA_PREDICTION_MIN_GAP`. Why: the velocity z - eps
    holds the noise, which a narrow network has to reproduce token by token; a clean latent lies near the data
    and is smoother to predict (Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise"). The
    loss stays the velocity loss either way, and the weights have the same shapes.
    "residual": like "data", but the head outputs the change from the reference frame, z_hat = z_ref + out
    (v = (z_ref + out - x_t) / (1 - t)). Why: consecutive smoke frames share most of their detail, and a network
    that must carry it from its z_ref input through every block to the head (a learned near-identity map of a
    256-channel latent) loses some of it, which shows as blur; with the skip the detail is passed on exactly and
    the network spends itself on the motion. With the zero-initialised head it starts as copy-last-frame.
    """

    state_size: int = 256
    state_res: list = field(default_factory=lambda: [8, 8])
    inner_dim: int = 512
    depth: int = 4
    mid_depth: int = 5
    num_heads: int = 8
    max_distance: int = 32
    mlp_ratio: float = 4.0
    activation: str = "gelu_tanh"
    warm_start_input: bool = False
    prediction: str = "velocity"

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        self.state_res = [int(v) for v in self.state_res]
        if len(self.state_res) != 2 or min(self.state_res) < 1:
            raise ValueError(f"state_res must be [h, w] with positive sizes, got {self.state_res}")
        for name in ("state_size", "inner_dim", "num_heads", "max_distance"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.depth < 0 or self.mid_depth < 0 or self.depth * 2 + self.mid_depth < 1:
            raise ValueError(f"need at least one block (depth={self.depth}, mid_depth={self.mid_depth})")
        if self.inner_dim % self.num_heads:
            raise ValueError(f"inner_dim {self.inner_dim} must be divisible by num_heads {self.num_heads}")


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv and ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, heads, N, d_head]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, skip: bool = False,
                 activation: str = "gelu_tanh"):
        super().__init__()
        # Output blocks of the U fuse the kept activation of the matching input block first.
        self.skip_fuse = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), _ACTIVATIONS[activation](), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_fuse is not None:
            x = self.skip_fuse(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of flow times t (float [B] in [0, 1]) -> float [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    # Scale t by 1000 so the [0, 1] flow time spans the same frequencies as diffusion step indices.
    args = (1000.0 * t.float())[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class VectorField(nn.Module):
    """v(x_t, t | z_ref, z_ctx, distance) -> velocity with the shape of x_t.

    All latents are float [B, C, h, w] (normalised, ~N(0,1)); t float [B] in [0, 1]; distance long [B] >= 1
    (target index minus context index).
    """

    def __init__(self, config: VectorFieldConfig):
        super().__init__()
        self.config = config
        c, d = config.state_size, config.inner_dim
        h, w = config.state_res
        self.num_positions = h * w
        # The projection of the concatenation [x_t, z_ref, z_ctx], split into its three parts (see module doc).
        self.project_noisy = nn.Linear(c, d)
        self.project_reference = nn.Linear(c, d, bias=False)
        self.project_context = nn.Linear(c, d, bias=False)
        self.position_embedding = nn.Parameter(torch.zeros(1, h * w, d))
        self.distance_embedding = nn.Embedding(config.max_distance + 1, d)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.warm_start_mlp = (nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
                               if config.warm_start_input else None)
        block = dict(num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, activation=config.activation)
        self.in_blocks = nn.ModuleList(Block(d, **block) for _ in range(config.depth))
        self.mid_blocks = nn.ModuleList(Block(d, **block) for _ in range(config.mid_depth))
        self.out_blocks = nn.ModuleList(Block(d, skip=True, **block) for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, c)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        nn.init.trunc_normal_(self.distance_embedding.weight, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Start as the zero field: the first steps learn the mean velocity instead of fighting random outputs.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if self.warm_start_mlp is not None:
            # Zero output: a network given this input starts out as the same function as one without it, so
            # weights trained without it (init_from) fine-tune from where they are.
            nn.init.zeros_(self.warm_start_mlp[-1].weight)
            nn.init.zeros_(self.warm_start_mlp[-1].bias)

    # --- conditioning: computed once per frame (or once per candidate context frame) -------------------------
    @staticmethod
    def _tokens(z: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] -> [B, h*w, C] (one token per latent position)."""
        return z.flatten(2).transpose(1, 2)

    def reference_tokens(self, z_ref: torch.Tensor) -> torch.Tensor:
        """Reference frame part of the tokens (with the position embedding): [B,C,h,w] -> [B, h*w, D]."""
        return self.project_reference(self._tokens(z_ref)) + self.position_embedding

    def context_tokens(self, z_ctx: torch.Tensor) -> torch.Tensor:
        """Context frame part of the tokens: [B,C,h,w] -> [B, h*w, D]."""
        return self.project_context(self._tokens(z_ctx))

    def distance_tokens(self, distance: torch.Tensor) -> torch.Tensor:
        """Index distance part: long [B] -> [B, 1, D] (broadcast over positions); clamped to max_distance."""
        distance = distance.long().clamp(1, self.config.max_distance)
        return self.distance_embedding(distance)[:, None, :]

    def warm_start_tokens(self, warm_start, batch_size: int) -> torch.Tensor | float:
        """Warm start part: s (float, or float [B], in [0, 1)) -> [B, 1, D]; 0.0 when the network has no such input."""
        if self.warm_start_mlp is None:
            return 0.0
        dtype, device = self.position_embedding.dtype, self.position_embedding.device
        s = torch.as_tensor(warm_start, dtype=torch.float32, device=device).reshape(-1).expand(batch_size)
        return self.warm_start_mlp(timestep_embedding(s, self.config.inner_dim).to(dtype))[:, None, :]

    def condition(self, z_ref: torch.Tensor, z_ctx: torch.Tensor, distance: torch.Tensor,
                  warm_start=0.0) -> torch.Tensor:
        """All conditioning of one network call: [B, h*w, D]. ``warm_start``: s of the path (float or [B])."""
        return (self.reference_tokens(z_ref) + self.context_tokens(z_ctx) + self.distance_tokens(distance)
                + self.warm_start_tokens(warm_start, z_ref.shape[0]))

    # --- the part that changes at every ODE step ---------------------------------------------------------
    def time_token(self, t: torch.Tensor) -> torch.Tensor:
        """The token of flow time t (float [B] in [0, 1]) -> [B, 1, D] in the weights' dtype; depends on t alone."""
        embedding = timestep_embedding(t, self.config.inner_dim).to(self.position_embedding.dtype)
        return self.time_mlp(embedding)[:, None, :]

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor,
                 time_token: torch.Tensor | None = None, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity at (x_t, t) given precomputed conditioning tokens [B, h*w, D] -> [B, C, h, w].

        time_token: ``self.time_token(t)`` when the caller already has it ([B, 1, D]; the sampler meets the
        same few t values in every frame, so the CPU fast path caches them). anchor: the reference latent z_ref
        [B, C, h, w] that a "residual" network adds its output to (required there, ignored otherwise).
        """
        b, c, h, w = x_t.shape
        if t.ndim == 0:
            t = t.expand(b)
        tokens = self.project_noisy(self._tokens(x_t)) + condition
        if time_token is None:
            time_token = self.time_token(t)
        x = torch.cat([time_token.to(tokens.dtype), tokens], dim=1)
        kept = []
        for block in self.in_blocks:
            x = block(x)
            kept.append(x)
        for block in self.mid_blocks:
            x = block(x)
        for block in self.out_blocks:
            x = block(x, kept.pop())
        out = self.head(self.norm_out(x[:, 1:]))  # drop the time token
        out = out.transpose(1, 2).reshape(b, c, h, w)
        if self.config.prediction == "velocity":
            return out
        if self.config.prediction == "residual":
            if anchor is None:
                raise ValueError("a residual-prediction network needs the reference latent (anchor=z_ref)")
            out = out + anchor.to(out.dtype)
        gap = (1.0 - t.float()).clamp(min=DATA_PREDICTION_MIN_GAP).to(out.dtype).view(b, 1, 1, 1)
        return (out - x_t.to(out.dtype)) / gap

    def forward(self, x_t, t, z_ref, z_ctx, distance, warm_start=0.0) -> torch.Tensor:
        """Training entry point: v(x_t, t | z_ref, z_ctx, distance[, s]) -> float [B, C, h, w]."""
        return self.velocity(x_t, t, self.condition(z_ref, z_ctx, distance, warm_start), anchor=z_ref)

    def flops_per_call(self, batch_size: int = 1) -> int:
        """Multiply-add FLOPs (2 per MAC) of one :meth:`velocity` call: linear layers and attention matmuls."""
        d, c = self.config.inner_dim, self.config.state_size
        n = self.num_positions + 1
        hidden = int(d * self.config.mlp_ratio)
        per_block = n * (3 * d * d + d * d + 2 * d * hidden) + 2 * n * n * d
        blocks = len(self.in_blocks) + len(self.mid_blocks) + len(self.out_blocks)
        total = blocks * per_block + len(self.out_blocks) * n * 2 * d * d
        total += self.num_positions * (c * d + d * c) + 2 * d * d  # input projection, head, time MLP
        return 2 * batch_size * total
