"""Vector quantiser with an EMA codebook that stays alive.

Each latent vector (one per spatial position) is replaced by its nearest codebook entry (Euclidean). The
codebook is not learnt by gradients but by exponential moving averages of the encoder outputs assigned to
each code (van den Oord et al. 2017, appendix; "VQ-VAE-2"), which is stable and fast. Codes whose EMA usage
falls below ``dead_code_threshold`` are restarted on recent encoder outputs, drawn with probability
proportional to their current quantisation error: smoke frames are mostly black, so uniform draws would put
every restarted code on the (already perfectly coded) background token.

Under torch.distributed the per-code counts and sums are all-reduced and restarts are broadcast from rank 0,
so every process keeps the identical codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class QuantizerOutput:
    """Result of :meth:`VectorQuantizer.forward`.

    quantized: [B,D,h,w] float, nearest codes with a straight-through gradient to the input.
    indices: [B,h,w] int64 code indices.
    commitment_loss: scalar, mean squared distance of the input to its (detached) code.
    perplexity: scalar, exp(entropy) of the code histogram of this batch (1 = one code, K = uniform).
    num_restarted: dead codes restarted in this call (0 outside training).
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    num_restarted: int


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """EMA vector quantiser.

    codebook_size K, dim D. Buffers (saved in the state dict): ``codebook`` [K,D], ``ema_cluster_size`` [K],
    ``ema_embed_sum`` [K,D], ``initialized`` (0/1 scalar).
    """

    def __init__(self, codebook_size: int = 1024, dim: int = 256, decay: float = 0.99, eps: float = 1e-5,
                 dead_code_threshold: float = 0.03, restart_every: int = 10):
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.decay = decay
        self.eps = eps
        self.dead_code_threshold = dead_code_threshold
        self.restart_every = restart_every
        self.register_buffer("codebook", torch.randn(codebook_size, dim) * 0.1)
        self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
        self.register_buffer("ema_embed_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))
        self.register_buffer("update_count", torch.zeros((), dtype=torch.int64))

    # ----------------------------------------------------------------------------------------- lookup
    def nearest(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codes of ``flat`` [N,D] (float32): returns (indices [N] int64, squared distance [N])."""
        codebook = self.codebook
        # |z-e|^2 = |z|^2 - 2 z.e + |e|^2, in chunks so huge N (whole-split inspection) stays bounded.
        code_sq = (codebook * codebook).sum(1)
        indices, dists = [], []
        for chunk in flat.split(16384):
            d = (chunk * chunk).sum(1, keepdim=True) - 2.0 * chunk @ codebook.t() + code_sq[None]
            best, idx = d.min(dim=1)
            indices.append(idx)
            dists.append(best.clamp_min(0))
        return torch.cat(indices), torch.cat(dists)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of ``indices`` [B,h,w] -> [B,D,h,w]."""
        return self.codebook[indices].permute(0, 3, 1, 2).contiguous()

    # ------------------------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantise ``z`` [B,D,h,w]; in training mode also update the codebook (EMA + dead-code restarts)."""
        batch, dim, height, width = z.shape
        z32 = z.float()
        flat = z32.permute(0, 2, 3, 1).reshape(-1, dim)
        num_restarted = 0
        if self.training:
            with torch.no_grad():
                if not bool(self.initialized):
                    self._initialize_from(flat.detach())
        indices, sq_dist = self.nearest(flat.detach())
        counts = torch.bincount(indices, minlength=self.codebook_size).float()
        if self.training:
            with torch.no_grad():
                num_restarted = self._ema_update(flat.detach(), indices, counts, sq_dist)
        quantized = self.codebook[indices].view(batch, height, width, dim).permute(0, 3, 1, 2)
        commitment = F.mse_loss(z32, quantized.detach())
        # Straight-through: the decoder sees the codes, the encoder receives the decoder's gradient.
        quantized_st = z32 + (quantized - z32).detach()
        probs = counts / counts.sum().clamp_min(1)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        return QuantizerOutput(quantized_st.to(z.dtype), indices.view(batch, height, width), commitment,
                               perplexity, num_restarted)

    # ------------------------------------------------------------------------------ EMA internals
    def _initialize_from(self, flat: torch.Tensor) -> None:
        """First training batch: codes = random encoder outputs (+ tiny noise so duplicates separate)."""
        picks = torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)
        codes = flat[picks] + 1e-3 * torch.randn(self.codebook_size, self.dim, device=flat.device)
        if _distributed():
            dist.broadcast(codes, src=0)
        # Start every code just above the dead threshold: codes the data never picks are restarted after
        # a few dozen steps instead of lingering for hundreds (measured: 37/1024 codes in use at step 200).
        start_size = self._restart_size()
        self.codebook.copy_(codes)
        self.ema_embed_sum.copy_(codes * start_size)
        self.ema_cluster_size.fill_(start_size)
        self.initialized.fill_(1)

    def _ema_update(self, flat, indices, counts, sq_dist) -> int:
        embed_sum = torch.zeros_like(self.codebook).index_add_(0, indices, flat)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(embed_sum)
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_embed_sum.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)
        # Laplace smoothing keeps codes with tiny counts from dividing by ~0.
        total = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.ema_embed_sum / smoothed[:, None])
        self.update_count.add_(1)
        if self.restart_every <= 0 or int(self.update_count) % self.restart_every != 0:
            return 0
        return self._restart_dead_codes(flat, sq_dist)

    def _restart_dead_codes(self, flat: torch.Tensor, sq_dist: torch.Tensor) -> int:
        dead = self.ema_cluster_size < self.dead_code_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return 0
        # Draw replacements where the current codebook is worst (k-means++-like seeding).
        weights = sq_dist + 1e-12
        picks = torch.multinomial(weights, num_dead, replacement=num_dead > weights.numel())
        new_codes = flat[picks] + 1e-4 * torch.randn(num_dead, self.dim, device=flat.device)
        if _distributed():
            # Same restart on every rank: rank 0's choice wins (the dead mask is already identical).
            dist.broadcast(new_codes, src=0)
        self.codebook[dead] = new_codes
        restart_size = self._restart_size()
        self.ema_cluster_size[dead] = restart_size
        self.ema_embed_sum[dead] = new_codes * restart_size
        return num_dead

    def _restart_size(self) -> float:
        """EMA usage given to new codes: above the threshold, so they are not restarted again at once."""
        return max(self.dead_code_threshold * 4, 1e-3)

    def extra_repr(self) -> str:
        return (f"codebook_size={self.codebook_size}, dim={self.dim}, decay={self.decay}, "
                f"dead_code_threshold={self.dead_code_threshold}")
