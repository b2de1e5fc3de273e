"""Models whose weights are set by hand, so the right answer of an analysis is known.

``induction_model()`` builds a 2-layer attention-only :class:`~interplab.models.toy.ToyTransformer`
with exactly one previous-token head (layer 0, head 0) and one induction head (layer 1, head 0)
that K-composes with it — the two-head induction circuit of Elhage et al. (2021), "A Mathematical
Framework for Transformer Circuits", and Olsson et al. (2022), "In-context Learning and Induction
Heads". All other heads get small random weights (so they are present but do nothing systematic).

The residual stream is split into four orthogonal blocks of one-hot coordinates::

    [ token (V) | position (N) | previous token (V) | output (V) ]

* embed writes the token one-hot into *token*, pos_embed the position one-hot into *position*;
* L0H0 (previous-token head): query e_pos(i) · key e_pos(j) shifted by one, so position i attends
  to i-1; its OV circuit copies the attended *token* block into the *previous token* block;
* L1H0 (induction head): the query reads the current *token*, the key reads the *previous token*
  block, so position i attends to every j whose previous token equals token i; its OV circuit copies
  the attended *token* into the *output* block;
* the unembedding reads the *output* block: the model predicts the token that followed the earlier
  occurrence of the current token.

``copying_model()`` builds a 2-layer attention-only model with one copying head, one anti-copying
(copy-suppression) head and one rank-1 positive semi-definite head among random heads: the ground truth
of the OV copying score (:mod:`interplab.analyses.weights.copying`).
"""

from __future__ import annotations

from typing import Any

import torch

from interplab.models.toy import ToyConfig, ToyTransformer

PREV_TOKEN_HEAD = (0, 0)
INDUCTION_HEAD = (1, 0)


def induction_config(d_vocab: int = 64, n_ctx: int = 48, n_heads: int = 2) -> ToyConfig:
    d_head = max(d_vocab, n_ctx)
    return ToyConfig(
        n_layers=2,
        d_model=3 * d_vocab + n_ctx,
        n_heads=n_heads,
        d_head=d_head,
        d_mlp=0,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        normalization=None,
        positional="learned",
        attn_bias=True,
        unembed_bias=False,
    )


def induction_model(
    d_vocab: int = 64, n_ctx: int = 48, n_heads: int = 2, sharpness: float = 30.0, noise: float = 0.02, seed: int = 0
):
    """The planted 2-layer induction circuit, wrapped as an interplab ``Model`` (no tokenizer: use ids).

    ``sharpness`` is the planted attention logit (larger: harder attention); ``noise`` is the
    std of the random weights given to every other head."""
    from interplab.models.model import Model

    V, N = d_vocab, n_ctx
    cfg = induction_config(V, N, n_heads)
    cfg.seed = seed
    toy: Any = ToyTransformer(cfg)  # modules reached by attribute (embed, blocks[i].attn.q_proj, ...)
    tok, pos, prev, out = slice(0, V), slice(V, V + N), slice(V + N, 2 * V + N), slice(2 * V + N, 3 * V + N)
    E = cfg.d_head
    sharpness = sharpness * E**0.5  # the model divides scores by sqrt(d_head)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in toy.parameters():
            p.zero_()
        toy.embed.weight[:, tok] = torch.eye(V)
        toy.pos_embed.weight[:, pos] = torch.eye(N)
        toy.unembed.weight[:, out] = torch.eye(V)  # nn.Linear weight [vocab, d_model]
        for layer, block in enumerate(toy.blocks):
            a = block.attn
            for w in (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight):  # [h*E, d]
                w.copy_(torch.randn(w.shape, generator=g) * noise)
            a.o_proj.weight.copy_(torch.randn(a.o_proj.weight.shape, generator=g) * noise)
            h0 = slice(0, E)  # rows of head 0 in q/k/v, columns of head 0 in o_proj
            for w in (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight):
                w[h0] = 0
            a.o_proj.weight[:, h0] = 0
            if layer == 0:  # previous-token head
                a.q_proj.weight[h0][:N, pos] = sharpness * torch.eye(N)
                # key at position j lives on head coordinate j+1: query i matches key i-1
                a.k_proj.weight[h0][1:N, pos][:, : N - 1] = torch.eye(N - 1)
                a.v_proj.weight[h0][:V, tok] = torch.eye(V)
                a.o_proj.weight[prev, h0][:, :V] = torch.eye(V)
            else:  # induction head
                a.q_proj.weight[h0][:V, tok] = sharpness * torch.eye(V)
                a.k_proj.weight[h0][:V, prev] = torch.eye(V)
                a.v_proj.weight[h0][:V, tok] = torch.eye(V)
                a.o_proj.weight[out, h0][:, :V] = torch.eye(V)
    return Model(toy.eval(), None, name="planted-induction-2l", source="interplab.models.planted.induction_model")


COPYING_HEAD = (1, 0)
ANTI_COPYING_HEAD = (0, 1)
PSD_HEAD = (1, 2)


def copying_model(d_vocab: int = 512, d_model: int = 64, n_heads: int = 4, seed: int = 0):
    """A planted 2-layer attention-only model for copying scores, wrapped as an interplab ``Model`` (no
    tokenizer). Tied Gaussian embeddings (``W_U = W_E^T``, entries N(0, 1)), RMSNorm with unit gains,
    ``d_head = d_model``; every head's OV circuit is set by hand:

    * :data:`COPYING_HEAD` (layer 1, head 0): ``W_V = W_O = I``, so ``W_E W_OV W_U = W_E W_E^T``, whose
      diagonal (``|e_t|^2``) is the largest entry of each row: the head raises the logit of the token it
      attends to, for every token;
    * :data:`ANTI_COPYING_HEAD` (layer 0, head 1): ``W_O = -I``: it lowers the attended token's logit;
    * :data:`PSD_HEAD` (layer 1, head 2): ``W_OV = a a^T`` for one random direction ``a`` (rank 1, positive
      semi-definite): every nonzero eigenvalue of its full OV circuit is positive (Elhage et al.'s ratio is
      1, as for the copying head), yet it writes the same direction whatever it attends to and copies no
      token;
    * every other head: ``W_V``, ``W_O`` with N(0, 1/d_model) entries (random OV circuits).

    Queries and keys are random (N(0, 1/d_model)); attention plays no role in the copying scores."""
    from interplab.models.model import Model

    cfg = ToyConfig(
        n_layers=2,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model,
        d_mlp=0,
        d_vocab=d_vocab,
        n_ctx=64,
        normalization="RMS",
        positional=None,
        attn_bias=False,
        unembed_bias=False,
        seed=seed,
    )
    toy: Any = ToyTransformer(cfg)
    d = d_model
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(d)
    with torch.no_grad():
        toy.embed.weight.copy_(torch.randn(d_vocab, d, generator=g))
        toy.unembed.weight.copy_(toy.embed.weight)  # nn.Linear weight [vocab, d_model]: W_U = W_E^T
        for block in toy.blocks:
            a = block.attn
            for w in (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight):
                w.copy_(torch.randn(w.shape, generator=g) * d**-0.5)
        planted = {COPYING_HEAD: (eye, eye), ANTI_COPYING_HEAD: (eye, -eye)}
        u = torch.randn(d, generator=g)
        u, e0 = u / u.norm(), eye[0]
        planted[PSD_HEAD] = (torch.outer(u, e0), torch.outer(e0, u))  # W_V = u e_0^T, W_O = e_0 u^T: W_OV = u u^T
        for (layer, head), (w_v, w_o) in planted.items():
            a = toy.blocks[layer].attn
            rows = slice(head * d, (head + 1) * d)
            a.v_proj.weight[rows] = w_v.T  # v = x @ v_proj.weight[rows].T = x @ W_V
            a.o_proj.weight[:, rows] = w_o.T  # out = z @ o_proj.weight[:, rows].T = z @ W_O
    return Model(toy.eval(), None, name="planted-copying-2l", source="interplab.models.planted.copying_model")
