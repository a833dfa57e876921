"""The multi-subject encoder (CMI-DAIR, Algonauts 2023): factorized readout -> shared + subject maps -> group PCA.

* Per tapped layer a factorized spatial readout: channel weights ``(C, D)`` (a 1x1 convolution to
  ``D`` latents) times one spatial weight map per latent ``(D, S)`` (depthwise spatial pooling),
  then BatchNorm; the layers' latents are averaged. Shared by all subjects.
* Dropout, then a shared linear map ``D -> K`` plus a subject-specific low-rank one
  ``D -> r -> K`` (none for a single subject: there is nothing shared to separate).
* A frozen group-PCA embedding ``K -> vertices``: components of all selected subjects' training
  responses placed in fsaverage space (:func:`group_pca`); each subject reads its own vertices.
* :class:`Ensemble`: several such encoders, initialised differently, trained side by side; it
  predicts their mean.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def pool_factor(positions: int, max_positions: int) -> int:
    """The average-pooling factor that brings a square ``positions`` map to at most ``max_positions``
    (1 for token sequences, vectors and maps small enough already)."""
    side = math.isqrt(positions)
    if side * side != positions or positions <= max_positions:
        return 1
    k = 2
    while math.ceil(side / k) ** 2 > max_positions:
        k += 1
    return k


class FactorizedReadout(nn.Module):
    """``(B, C, S) -> (B, D)``: per latent, a channel projection and a spatial pooling map (rank one).

    A square map of more than ``max_positions`` positions is average-pooled first (on the demo,
    MobileNetV2 ``features.6`` pooled 28x28 -> 14x14 cost 0.2 points and saved most of an epoch's time).
    """

    def __init__(self, channels: int, positions: int, latents: int, max_positions: int = 196):
        super().__init__()
        self.pool = pool_factor(positions, max_positions)
        self.side = math.isqrt(positions)
        if self.pool > 1:
            positions = math.ceil(self.side / self.pool) ** 2
        self.channel = nn.Parameter(torch.randn(channels, latents) / np.sqrt(channels))
        self.spatial = nn.Parameter(torch.full((latents, positions), 1.0 / positions))
        self.norm = nn.BatchNorm1d(latents)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            x = nn.functional.avg_pool2d(x.unflatten(2, (self.side, self.side)), self.pool, ceil_mode=True).flatten(2)
        # contract the larger of channels / positions first, so the intermediate is (B, min(C, S), D)
        if x.shape[1] < x.shape[2]:
            y = (torch.matmul(x, self.spatial.T) * self.channel).sum(1)
        else:
            y = (torch.matmul(x.transpose(1, 2), self.channel) * self.spatial.T).sum(1)
        return self.norm(y)


class GroupEncoder(nn.Module):
    """Tapped-layer activations of one subject's images -> that subject's vertex responses (standardised).

    ``shapes``: ``(C, S)`` per tapped layer; ``embedding``: ``(K, n_group_vertices)`` frozen PCA
    components; ``vertex_index[s]``: the group-vertex index of each of subject ``s``'s vertices.
    """

    def __init__(self, shapes: list[tuple[int, int]], embedding: np.ndarray, vertex_index: list[np.ndarray],
                 latents: int = 256, subject_rank: int = 16, dropout: float = 0.6, max_positions: int = 196):
        super().__init__()
        self.readouts = nn.ModuleList(FactorizedReadout(c, s, latents, max_positions) for c, s in shapes)
        self.dropout = nn.Dropout(dropout)
        k = embedding.shape[0]
        self.shared = nn.Linear(latents, k)
        n_sub = len(vertex_index)
        self.rank = subject_rank if n_sub > 1 else 0
        self.subject_in = nn.Parameter(torch.randn(n_sub, latents, self.rank) / np.sqrt(latents))
        self.subject_out = nn.Parameter(torch.zeros(n_sub, self.rank, k))
        for s, idx in enumerate(vertex_index):  # each subject's slice of the frozen embedding
            self.register_buffer(f"embedding_{s}", torch.from_numpy(np.ascontiguousarray(embedding[:, idx])).float())

    def latent(self, acts: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([r(a) for r, a in zip(self.readouts, acts)]).mean(0)

    def forward(self, acts: list[torch.Tensor], subject: int) -> torch.Tensor:
        z = self.dropout(self.latent(acts))
        h = self.shared(z)
        if self.rank:
            h = h + (z @ self.subject_in[subject]) @ self.subject_out[subject]
        return h @ getattr(self, f"embedding_{subject}")


class Ensemble(nn.Module):
    """Independently initialised :class:`GroupEncoder` members trained side by side on the same batches.

    In training mode ``forward`` gives every member's prediction ``(N, B, V)``, so a mean squared error
    against the broadcast targets is the mean of the members' own losses: no gradient couples them
    (each learns as it would alone; Adam's steps do not depend on the 1/N). In eval mode it gives
    their mean ``(B, V)``.
    """

    def __init__(self, members: list[GroupEncoder]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, acts: list[torch.Tensor], subject: int) -> torch.Tensor:
        out = torch.stack([m(acts, subject) for m in self.members])
        return out if self.training else out.mean(0)


def group_pca(responses: list[np.ndarray], vertex_index: list[np.ndarray], n_group: int, n_components: int,
              seed: int = 0, max_rows: int = 10_000) -> np.ndarray:
    """Randomized PCA of the stacked standardised training responses in group (fsaverage) space.

    ``responses[s]`` is ``(n_s, V_s)``, its columns at ``vertex_index[s]`` of the ``n_group``
    group vertices; vertices a subject lacks count as 0 (its mean). At most ``max_rows`` rows are
    used (seeded). Returns orthonormal components ``(K, n_group)``, ``K <= n_components``.
    """
    rng = np.random.default_rng(seed)
    n_rows = sum(r.shape[0] for r in responses)
    take = min(1.0, max_rows / n_rows)
    blocks = []
    for r, idx in zip(responses, vertex_index):
        rows = np.sort(rng.choice(r.shape[0], max(2, int(round(r.shape[0] * take))), replace=False))
        block = np.zeros((len(rows), n_group), np.float32)
        block[:, idx] = r[rows]
        blocks.append(block)
    Y = torch.from_numpy(np.concatenate(blocks))
    k = int(min(n_components, Y.shape[0] - 1, n_group))
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        _u, _s, v = torch.svd_lowrank(Y, q=min(k + 10, min(Y.shape)), niter=3)
    finally:
        torch.random.set_rng_state(gen_state)
    return v[:, :k].T.contiguous().numpy()
