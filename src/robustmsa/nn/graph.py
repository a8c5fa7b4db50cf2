"""Masked message passing over a small graph of typed nodes, and masked attention read-outs.

Nodes carry a group id (for multimodal graphs: the modality) and a validity mask. Two kinds of
step exist: an *intra* step lets a node hear only nodes of its own group, an *inter* step only
nodes of the other groups. An invalid node (a missing modality, a padded or dropped segment)
neither sends nor receives: it is excluded as a key everywhere, its own state stays zero, and a
node that has nobody to hear in a step gets no message at all (not a bias). So any value stored
in an invalid node cannot reach any valid node or the read-out.

>>> graph = GraphMessagePassing(d=8, rounds=1, heads=2)
>>> nodes, mask = torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.bool)
>>> graph(nodes, torch.tensor([0, 0, 1, 1]), mask).shape
torch.Size([3, 4, 8])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

MESSAGE_MODES = ("alternate", "intra", "inter")


def step_kinds(rounds: int, mode: str = "alternate") -> list[str]:
    """The kind of each step: `alternate` is [intra, inter] per round; `intra` / `inter` use two
    steps of that kind per round, so every mode has the same depth and parameter count.

    >>> step_kinds(2)
    ['intra', 'inter', 'intra', 'inter']
    """
    if mode not in MESSAGE_MODES:
        raise ValueError(f"message passing mode {mode!r}: expected one of {', '.join(MESSAGE_MODES)}")
    if rounds < 1:
        raise ValueError(f"message passing needs rounds >= 1, got {rounds}")
    per_round = ["intra", "inter"] if mode == "alternate" else [mode, mode]
    return per_round * rounds


def relation_mask(groups: Tensor, kind: str) -> Tensor:
    """allowed[..., i, j]: node i (receiver) may hear node j (sender) in a step of `kind`.
    groups: (N,) or (B, N) ints -> (N, N) or (B, N, N) bool."""
    same = groups.unsqueeze(-1) == groups.unsqueeze(-2)
    if kind == "intra":
        return same
    if kind == "inter":
        return ~same
    raise ValueError(f"step kind {kind!r}: expected intra or inter")


def masked_softmax(logits: Tensor, allowed: Tensor) -> Tensor:
    """Softmax over the last axis restricted to `allowed`; rows with nothing allowed are all zero
    (never NaN, also in the backward pass), so an isolated node receives no message."""
    has_any = allowed.any(dim=-1, keepdim=True)
    logits = logits.masked_fill(~allowed, float("-inf")).masked_fill(~has_any, 0.0)
    return torch.softmax(logits, dim=-1) * allowed.to(logits.dtype)


class MaskedAttention(nn.Module):
    """Multi-head attention of queries over keys under a boolean (B, Q, K) `allowed` matrix.
    Returns (messages (B, Q, d), weights over the real keys (B, heads, Q, K)); a query with no
    allowed key gets 0.

    A learned null key (an attention sink) competes with the allowed keys wherever there is at
    least one, so a node can decline what it hears, and the attention stays trainable when a
    node has a single neighbour (a softmax over one key is constant). The null key is a
    parameter, not data: it carries nothing from any node."""

    def __init__(self, d: int, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if d % heads:
            raise ValueError(f"attention width d={d} is not divisible by heads={heads}")
        self.heads = heads
        self.query = nn.Linear(d, d)
        self.key_value = nn.Linear(d, 2 * d)
        self.null = nn.Parameter(torch.zeros(1, 1, d))
        self.out = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, keys: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        b, q_len, d = queries.shape
        keys = torch.cat([self.null.expand(b, 1, d), keys], dim=1)
        received = allowed.any(dim=-1, keepdim=True)
        allowed = torch.cat([received, allowed], dim=-1)  # the null key only beside a real one
        k_len, width = keys.shape[1], d // self.heads
        q = self.query(queries).view(b, q_len, self.heads, width).transpose(1, 2)
        k, v = self.key_value(keys).view(b, k_len, 2, self.heads, width).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(width)
        weights = masked_softmax(logits, allowed.unsqueeze(1))
        mixed = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, q_len, d)
        return self.out(mixed) * received.to(mixed.dtype), weights[..., 1:]


class MessageStep(nn.Module):
    """One step: pre-norm masked attention along the allowed edges, then a node-wise MLP; both
    residual. Invalid nodes are zeroed afterwards, so they stay silent in later steps too.
    Dropout acts on the two residual branches only: on CPU each dropout mask costs about as much
    as the step's matrix products, and the graph is small."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.norm_attention = nn.LayerNorm(d)
        self.attention = MaskedAttention(d, heads)
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.dropout = nn.Dropout(dropout)

    def forward(self, nodes: Tensor, allowed: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
        """nodes (B, N, d), allowed (B, N, N) receiver x sender, node_mask (B, N)."""
        normed = self.norm_attention(nodes)
        message, weights = self.attention(normed, normed, allowed)
        nodes = nodes + self.dropout(message)
        nodes = nodes + self.dropout(self.mlp(self.norm_mlp(nodes)))
        return nodes * node_mask.unsqueeze(-1).to(nodes.dtype), weights


class GraphMessagePassing(nn.Module):
    """T rounds of masked message passing over grouped nodes (default: an intra-group step then an
    inter-group step per round, each with its own weights).

    forward(nodes (B, N, d), groups (N,) or (B, N) ints, node_mask (B, N) bool) -> (B, N, d);
    with `return_attention=True` also [(kind, weights (B, heads, N, N)) for each step].
    """

    def __init__(self, d: int, rounds: int = 3, heads: int = 4, mode: str = "alternate", dropout: float = 0.1):
        super().__init__()
        self.kinds = step_kinds(rounds, mode)
        self.steps = nn.ModuleList(MessageStep(d, heads, dropout) for _ in self.kinds)
        self.out_norm = nn.LayerNorm(d)

    def forward(self, nodes: Tensor, groups: Tensor, node_mask: Tensor, return_attention: bool = False):
        valid_pairs = node_mask.unsqueeze(-1) & node_mask.unsqueeze(-2)  # both ends valid
        relations = {kind: relation_mask(groups, kind) & valid_pairs for kind in set(self.kinds)}
        mask = node_mask.unsqueeze(-1).to(nodes.dtype)
        h = nodes * mask
        attention = []
        for kind, step in zip(self.kinds, self.steps):
            h, weights = step(h, relations[kind], node_mask)
            attention.append((kind, weights))
        h = self.out_norm(h) * mask
        return (h, attention) if return_attention else h


class AttentionReadout(nn.Module):
    """Masked attention pooling: a learned score per node, softmax over the valid nodes, weighted
    sum. Returns (pooled (B, d), weights (B, N)); a graph with no valid node pools to zero."""

    def __init__(self, d: int):
        super().__init__()
        # No bias on the last layer: a softmax ignores a shared shift, so it could never learn.
        self.score = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))

    def forward(self, nodes: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
        weights = masked_softmax(self.score(nodes).squeeze(-1), node_mask)
        return (weights.unsqueeze(-1) * nodes).sum(dim=1), weights


class NodeQueryDecoder(nn.Module):
    """Predicts node features from a graph: each query (e.g. "modality m, segment s" embeddings)
    attends over the valid nodes, then an MLP maps to `out_dim`. Used to reconstruct masked or
    missing nodes from what the graph still holds. queries (B, Q, d) -> (B, Q, out_dim)."""

    def __init__(self, d: int, out_dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.norm_query = nn.LayerNorm(d)
        self.attention = MaskedAttention(d, heads, dropout)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, out_dim))

    def forward(self, queries: Tensor, nodes: Tensor, node_mask: Tensor) -> Tensor:
        allowed = node_mask.unsqueeze(1).expand(-1, queries.shape[1], -1)
        message, _ = self.attention(self.norm_query(queries), nodes, allowed)
        return self.mlp(queries + message)
