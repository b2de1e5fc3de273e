"""The planted ground truth of the inversion tests: a toy model whose block 1 provably erases the input tokens.
Not a test module (no ``test_`` prefix); the inversion tests import it."""

from __future__ import annotations

from typing import Any

import torch

from interplab.models.model import Model
from interplab.models.toy import ToyConfig, ToyTransformer

V, N = 16, 8  # vocabulary and positions of the planted model


def eraser_model(seed: int = 0) -> Model:
    """A 3-block toy model (no norms) with the residual stream split into ``[token one-hot (V) | position one-hot (N) |
    scratch (V)]``. Block 0 has random attention and MLP weights that write into the scratch block (token information
    survives, and is mixed across positions); block 1 has no attention and an MLP ``y -> -S y`` (``S`` selects
    every coordinate outside the position block, computed exactly as ``-relu(S y) + relu(-S y)``), so its output is
    exactly the position one-hot: no token information is left after it. Block 2 is random again."""
    d = 2 * V + N
    cfg = ToyConfig(
        n_layers=3,
        d_model=d,
        n_heads=2,
        d_head=8,
        d_mlp=2 * d,
        d_vocab=V,
        n_ctx=N,
        normalization=None,
        positional="learned",
        attn_bias=False,
        seed=seed,
    )
    toy: Any = ToyTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    pos = slice(V, V + N)
    keep = torch.ones(d)
    keep[pos] = 0
    S = torch.diag(keep)
    with torch.no_grad():
        for p in toy.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        toy.embed.weight.zero_()
        toy.embed.weight[:, :V] = torch.eye(V)
        toy.pos_embed.weight.zero_()
        toy.pos_embed.weight[:, pos] = torch.eye(N)
        b0 = toy.blocks[0]
        b0.attn.o_proj.weight[: V + N] = 0  # block 0 writes into the scratch block only
        b0.mlp.fc_out.weight[: V + N] = 0
        b0.mlp.fc_out.bias[: V + N] = 0
        b1 = toy.blocks[1]
        for w in (b1.attn.q_proj.weight, b1.attn.k_proj.weight, b1.attn.v_proj.weight, b1.attn.o_proj.weight):
            w.zero_()
        b1.mlp.fc_in.weight.copy_(torch.cat([S, -S]))
        b1.mlp.fc_in.bias.zero_()
        b1.mlp.fc_out.weight.copy_(torch.cat([-S, S], dim=1))
        b1.mlp.fc_out.bias.zero_()
    return Model(toy.eval(), None, name="planted-eraser")
