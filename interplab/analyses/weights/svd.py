"""OV and QK circuits of every head by SVD, read in token space (Elhage et al. 2021, "A Mathematical
Framework for Transformer Circuits", https://transformer-circuits.pub/2021/framework/index.html).

Per head ``h`` of layer ``l`` (row-vector residual stream, ``x @ W``)::

    W_OV = W_V @ W_O      [d_model, d_model]   what the head writes, given what it attends to
    W_QK = W_Q @ W_K^T    [d_model, d_model]   score(x_query, x_key) = x_query W_QK x_key^T

Both are rank <= d_head; their SVDs come from the factors (:func:`factored_svd`):
``A @ B = (Q_a R_a)(R_b^T Q_b^T) = Q_a (R_a R_b^T) Q_b^T``, so the SVD of the d_model x d_model
product is the SVD of the d_head x d_head core, rotated back, and the product is never formed.

**SVD and tokens** (:func:`head_circuits`): for ``W_OV = U S V^T`` the head reads along ``u_i`` and writes
``s_i v_i``; in token space the *read* tokens of direction ``i`` are those with the largest
``W_E u_i`` and the *written* tokens those with the largest ``v_i W_U`` (``W_U`` with the final norm
folded). The sign of a singular pair is arbitrary, ``(-u_i, -v_i)`` being the same pair, so each
direction has two poles: ``+`` (largest read scores → largest written logits) and ``-`` (most negative
→ most negative); we orient each pair so the ``+`` pole is the read side's larger extreme. For
``W_QK = U S V^T`` the ``+`` pole lists query tokens (largest ``W_E u_i``) and key tokens (largest
``W_E v_i``) that the head matches. Reading W_E at every layer is the *direct path* view: exact for
layer 0, an approximation deeper in the model. The result also holds each head's copying and
copy-suppression scores with their null (:func:`~interplab.analyses.weights.copying.ov_copying`, the one copying
score, also the head detectors'), and for reference Elhage et al.'s eigenvalue ratio of the full OV circuit.
Norms are folded as :mod:`interplab.models.folding` describes.

>>> circ = head_circuits(model)
>>> circ.copying[5, 3], circ.tokens(5, 3, "OV", 0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.analyses.weights.copying import OVCopying, copying_members, copying_ratio, ov_copying, ov_eigenvalues
from interplab.io.results import Result
from interplab.models.folding import FoldedWeights, folded_weights
from interplab.runtime import torch_threads

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = ["Circuit", "HeadCircuitsResult", "factored_svd", "head_circuits", "head_svds"]

Circuit = Literal["OV", "QK"]


def factored_svd(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``A @ B`` for ``A [..., n, e]``, ``B [..., e, m]`` without forming the product:
    returns ``U [..., n, k]``, ``S [..., k]`` (descending), ``V [..., m, k]`` with
    ``A @ B = U diag(S) V^T`` and ``k = min(n, e, m)``. Computed in float64, returned in A's dtype."""
    dt = A.dtype
    A64, B64 = A.double(), B.double()
    Qa, Ra = torch.linalg.qr(A64)  # A = Qa Ra
    Qb, Rb = torch.linalg.qr(B64.mT)  # B^T = Qb Rb
    Uc, S, Vch = torch.linalg.svd(Ra @ Rb.mT, full_matrices=False)
    k = S.shape[-1]
    U, V = Qa @ Uc[..., :k], Qb @ Vch.mT[..., :k]
    return U.to(dt), S.to(dt), V.to(dt)


def head_svds(fw: FoldedWeights) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """OV and QK SVD factors of every head, ``U [L,H,d,k], S [L,H,k], V [L,H,d,k]`` (one layer at a time;
    batched d_head-sized decompositions run on one thread, which is faster than many on a loaded machine)."""
    out: dict[str, list] = {"OV": [], "QK": []}
    with torch_threads(1):
        for layer in range(fw.W_Q.shape[0]):
            out["OV"].append(factored_svd(fw.W_V[layer], fw.W_O[layer]))
            out["QK"].append(factored_svd(fw.W_Q[layer], fw.W_K[layer].mT))
    return {k: tuple(torch.stack(x) for x in zip(*v)) for k, v in out.items()}  # type: ignore[misc]


def _decode_ids(model: Model, ids: list[int]) -> list[str]:
    if model.tokenizer is None:
        return [f"#{i}" for i in ids]
    return [model.tokenizer.decode([i]) for i in ids]


@dataclass
class HeadCircuitsResult(Result):
    """Per head: singular values of the OV and QK circuits, the top singular directions read in token
    space, and the copying scores of the full OV circuit — see the module docstring.

    Tensors: ``ov_singular``, ``qk_singular`` ``[L, H, k]`` (descending); ``copying``, ``copy_suppression``
    ``[L, H]`` (:func:`~interplab.analyses.weights.copying.ov_copying`: fraction of tokens in the top / bottom
    ``k`` of their own OV output), with ``null_max`` (per score, the largest value of the rotation null over
    all heads); for reference ``eigenvalue_copying`` (Elhage et al.'s ``sum(lambda) / sum(|lambda|)``) and
    ``positive_fraction`` ``[L, H]``; ``eigenvalues`` ``[L, H, d_head, 2]`` (real, imaginary) of the
    full OV circuit; token ids ``[L, H, n_directions, top_k]`` in ``token_ids[circuit][side]`` with
    sides ``read+``, ``write+``, ``read-``, ``write-`` for OV and ``query+``, ``key+``, ``query-``,
    ``key-`` for QK; the matching strings in ``tokens_str``."""

    ov_singular: torch.Tensor
    qk_singular: torch.Tensor
    copying: torch.Tensor
    copy_suppression: torch.Tensor
    null_max: dict[str, float]
    eigenvalue_copying: torch.Tensor
    positive_fraction: torch.Tensor
    eigenvalues: torch.Tensor
    token_ids: dict[str, dict[str, torch.Tensor]]
    tokens_str: dict[str, dict[str, list]]
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    KIND: ClassVar[str] = "head_circuits"
    FILE: ClassVar[str] = "head_circuits.json"
    FORMAT_VERSION: ClassVar[int] = 2  # 2: copying is the top-k token fraction; the eigenvalue ratio moved

    @property
    def n_layers(self) -> int:
        return int(self.copying.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.copying.shape[1])

    def tokens(self, layer: int, head: int, circuit: Circuit = "OV", direction: int = 0) -> dict[str, list[str]]:
        """Top tokens of one singular direction: ``{"read+": [...], "write+": [...], ...}`` (OV) or
        ``{"query+": ..., "key+": ...}`` (QK)."""
        return {side: v[layer][head][direction] for side, v in self.tokens_str[circuit].items()}

    def top_copying(self, n: int = 10, score: str = "copying") -> list[list]:
        """Heads with the highest ``score`` (``"copying"`` or ``"copy_suppression"``): ``[layer, head, score]``."""
        t = self._score(score)
        vals, idx = t.flatten().topk(min(n, t.numel()))
        H = self.n_heads
        return [[i // H, i % H, round(v, 4)] for v, i in zip(vals.tolist(), idx.tolist())]

    def members(self, score: str = "copying") -> list[list]:
        """Heads that pass the membership rule of :func:`~interplab.analyses.weights.copying.copying_members`
        for ``score``, highest first: ``[layer, head, score]``."""
        t = self._score(score)
        m = copying_members(t, self.null_max[score])
        return [row for row in self.top_copying(t.numel(), score) if bool(m[row[0], row[1]])]

    def _score(self, score: str) -> torch.Tensor:
        if score not in ("copying", "copy_suppression"):
            raise ValueError(f"score must be 'copying' or 'copy_suppression', not {score!r}.")
        return self.copying if score == "copying" else self.copy_suppression

    def effective_rank(self, circuit: Circuit = "OV") -> torch.Tensor:
        """``(sum s)^2 / sum s^2`` per head ``[L, H]`` (participation ratio of the singular values)."""
        s = self.ov_singular if circuit == "OV" else self.qk_singular
        return s.sum(-1).square() / s.square().sum(-1).clamp_min(1e-30)

    def headline(self, n: int = 5) -> dict[str, Any]:
        """The top copying heads (with their first OV direction's read → written tokens and Elhage et al.'s
        eigenvalue ratio), the top copy-suppression heads, the members of both classes and the null level
        they beat, the fraction of heads with copying > 0.5, and ``most_negative``: the heads with the most
        negative eigenvalue ratio (reference)."""

        def entry(lh):
            layer, head, score = lh
            t = self.tokens(layer, head, "OV", 0)
            return {
                "layer": layer,
                "head": head,
                "copying": score,
                "eigenvalue_ratio": round(float(self.eigenvalue_copying[layer, head]), 4),
                "read": t["read+"][:5],
                "write": t["write+"][:5],
            }

        vals, idx = (-self.eigenvalue_copying).flatten().topk(min(n, self.eigenvalue_copying.numel()))
        H = self.n_heads
        neg = [[i // H, i % H, round(-v, 4)] for v, i in zip(vals.tolist(), idx.tolist())]
        return {
            "model": self.model_name,
            "top_copying": [entry(x) for x in self.top_copying(n)],
            "top_copy_suppression": self.top_copying(n, "copy_suppression"),
            "copying_members": self.members("copying"),
            "copy_suppression_members": self.members("copy_suppression"),
            "null_max": {c: round(v, 4) for c, v in self.null_max.items()},
            "most_negative": neg,
            "frac_copying_above_0.5": round(float((self.copying > 0.5).float().mean()), 4),
            "mean_copying": round(float(self.copying.mean()), 4),
        }

    def to_frame(self, which: str = "heads") -> pd.DataFrame:
        """``which="heads"``: one row per head (copying, positive fraction, top singular values, effective
        ranks). ``"tokens"``: one row per head, circuit, direction, side and rank with the token."""
        import pandas as pd

        L, H = self.n_layers, self.n_heads
        if which == "heads":
            er_ov, er_qk = self.effective_rank("OV"), self.effective_rank("QK")
            rows = [
                {
                    "layer": layer,
                    "head": h,
                    "copying": float(self.copying[layer, h]),
                    "copy_suppression": float(self.copy_suppression[layer, h]),
                    "eigenvalue_copying": float(self.eigenvalue_copying[layer, h]),
                    "positive_fraction": float(self.positive_fraction[layer, h]),
                    "ov_sv1": float(self.ov_singular[layer, h, 0]),
                    "qk_sv1": float(self.qk_singular[layer, h, 0]),
                    "ov_effective_rank": float(er_ov[layer, h]),
                    "qk_effective_rank": float(er_qk[layer, h]),
                }
                for layer in range(L)
                for h in range(H)
            ]
            return pd.DataFrame(rows)
        if which == "tokens":
            rows = []
            for circuit, sides in self.tokens_str.items():
                for side, per in sides.items():
                    for layer in range(L):
                        for h in range(H):
                            for di, toks in enumerate(per[layer][h]):
                                ids = self.token_ids[circuit][side][layer, h, di].tolist()
                                for r, (t, i) in enumerate(zip(toks, ids)):
                                    rows.append(
                                        {
                                            "layer": layer,
                                            "head": h,
                                            "circuit": circuit,
                                            "direction": di,
                                            "side": side,
                                            "rank": r + 1,
                                            "token": t,
                                            "token_id": i,
                                        }
                                    )
            return pd.DataFrame(rows)
        raise ValueError(f"which must be 'heads' or 'tokens', not {which!r}.")

    def plot(self, kind: str = "copying") -> go.Figure:
        """``kind="copying"``: heatmap layers × heads of the copying score (hover: copy suppression, Elhage et
        al.'s eigenvalue ratio, top read → written tokens); ``"spectrum"``: normalised OV and QK singular values
        of every head (lines)."""
        import html

        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        from interplab.analyses.observational.lens import display_token

        def esc(ts):
            return html.escape(" ".join(display_token(t) for t in ts[:5]), quote=False)

        L, H = self.n_layers, self.n_heads
        if kind == "copying":
            hover = [
                [
                    f"copy suppression {float(self.copy_suppression[layer, h]):.3f}, eigenvalue ratio "
                    f"{float(self.eigenvalue_copying[layer, h]):+.3f}<br>"
                    f"{esc(self.tokens_str['OV']['read+'][layer][h][0])} → "
                    f"{esc(self.tokens_str['OV']['write+'][layer][h][0])}"
                    for h in range(H)
                ]
                for layer in range(L)
            ]
            fig = go.Figure(
                go.Heatmap(
                    z=self.copying.tolist(),
                    x=list(range(H)),
                    y=list(range(L)),
                    customdata=hover,
                    colorscale="Reds",
                    zmin=0,
                    zmax=1,
                    colorbar={"title": {"text": "copying"}},
                    hovertemplate="L%{y} H%{x}<br>copying %{z:.3f}<br>%{customdata}<extra></extra>",
                )
            )
            fig.update_xaxes(title_text="head", dtick=1)
            fig.update_yaxes(title_text="layer", autorange="reversed", dtick=1)
            k = self.settings.get("copying_k", "k")
            title = f"Copying score (fraction of tokens in the top {k} of their own OV output W_E W_OV W_U)"
        elif kind == "spectrum":
            fig = make_subplots(rows=1, cols=2, subplot_titles=["OV singular values", "QK singular values"])
            for col, s in ((1, self.ov_singular), (2, self.qk_singular)):
                sn = s / s[..., :1].clamp_min(1e-30)
                for layer in range(L):
                    for h in range(H):
                        fig.add_trace(
                            go.Scatter(
                                y=sn[layer, h].tolist(),
                                mode="lines",
                                name=f"L{layer}H{h}",
                                line={"width": 1},
                                showlegend=False,
                                hovertemplate=f"L{layer}H{h}<br>i=%{{x}}<br>s_i/s_1=%{{y:.3f}}<extra></extra>",
                            ),
                            row=1,
                            col=col,
                        )
            fig.update_xaxes(title_text="singular direction")
            fig.update_yaxes(title_text="s_i / s_1", row=1, col=1)
            title = "Singular value spectra"
        else:
            raise ValueError(f"kind must be 'copying' or 'spectrum', not {kind!r}.")
        if self.model_name:
            title += f" — {html.escape(self.model_name, quote=False)}"
        fig.update_layout(title={"text": title}, height=max(360, 18 * L + 160))
        return fig

    # ---- persistence: head_circuits.json + head_circuits.safetensors, through the Result base
    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "token_ids":  # nested {circuit: {side: ids}}: JSON lists back to long tensors
            return {c: {s: torch.tensor(v, dtype=torch.long) for s, v in sides.items()} for c, sides in value.items()}
        return value


def _extremes(D: torch.Tensor, M: torch.Tensor, top_k: int, chunk: int = 256):
    """For each row ``r`` of ``D [n, d]`` the token scores ``r @ M`` (``M [d, vocab]``): the ids of the
    ``top_k`` largest and smallest, and the largest and smallest value. Chunked over rows so the
    ``[chunk, vocab]`` block stays small; returns ``(top [n, k], bottom [n, k], max [n], min [n])``."""
    tops, bots, mx, mn = [], [], [], []
    with torch.no_grad():
        for i in range(0, D.shape[0], chunk):
            sc = D[i : i + chunk] @ M
            tv, ti = sc.topk(top_k, dim=-1)
            bv, bi = (-sc).topk(top_k, dim=-1)
            tops.append(ti)
            bots.append(bi)
            mx.append(tv[:, 0])
            mn.append(-bv[:, 0])
    return torch.cat(tops), torch.cat(bots), torch.cat(mx), torch.cat(mn)


def head_circuits(
    model: Model,
    n_directions: int = 2,
    top_k: int = 10,
    fold_norms: bool = True,
    copying_k: int = 10,
    copying_tokens: int = 2048,
    ov: OVCopying | None = None,
    n_null_rotations: int = 1,
    seed: int = 0,
) -> HeadCircuitsResult:
    """SVD of every head's OV and QK circuit, its top singular directions read in token space (Elhage et al.
    2021), and copying scores (:func:`~interplab.analyses.weights.copying.ov_copying`). See the module
    docstring.

    Args:
        model: the model.
        n_directions: singular directions per head read in token space.
        top_k: tokens per pole of each direction.
        fold_norms: fold the norms into the weights (:mod:`interplab.models.folding`); False: raw weights.
        copying_k, copying_tokens, n_null_rotations, seed: ``k``, ``n_tokens``, ``n_null_rotations`` and
            ``seed`` of :func:`~interplab.analyses.weights.copying.ov_copying`.
        ov: copying scores already computed with :func:`~interplab.analyses.weights.copying.ov_copying` for this
            model (e.g. by :func:`~interplab.analyses.observational.heads.head_scores`), used instead of
            computing them again (the settings above then do not apply to them).
    """
    if n_directions < 1 or top_k < 1:
        raise ValueError(f"n_directions and top_k must be at least 1, got {n_directions} and {top_k}.")
    t0 = time.perf_counter()
    cfg = model.cfg
    fw = folded_weights(model, fold_norms=fold_norms)
    svd = head_svds(fw)
    eig = ov_eigenvalues(fw)
    eigenvalue_copying, positive = copying_ratio(eig)
    cp = ov or ov_copying(
        model, k=copying_k, n_tokens=copying_tokens, n_null_rotations=n_null_rotations, seed=seed, fold_norms=fold_norms
    )
    L, H = cfg.n_layers, cfg.n_heads
    k = svd["OV"][1].shape[-1]
    n_dir = min(n_directions, k)
    top_k = min(top_k, cfg.d_vocab)
    # directions [L, H, n_dir, d]: OV read u (W_E), OV write v (W_U), QK query u (W_E), QK key v (W_E)
    dirs = {
        ("OV", "read"): svd["OV"][0],
        ("OV", "write"): svd["OV"][2],
        ("QK", "query"): svd["QK"][0],
        ("QK", "key"): svd["QK"][2],
    }
    dirs = {key: u[..., :n_dir].movedim(-1, -2) for key, u in dirs.items()}
    on_E = [("OV", "read"), ("QK", "query"), ("QK", "key")]
    ext_E = _extremes(torch.cat([dirs[key].reshape(-1, cfg.d_model) for key in on_E]), fw.W_E.T, top_k)
    ext_U = _extremes(dirs[("OV", "write")].reshape(-1, cfg.d_model), fw.W_U, top_k)
    n = L * H * n_dir
    ext = {key: tuple(t[i * n : (i + 1) * n] for t in ext_E) for i, key in enumerate(on_E)}
    ext[("OV", "write")] = ext_U
    token_ids: dict[str, dict[str, torch.Tensor]] = {"OV": {}, "QK": {}}
    for circuit, (a, b) in (("OV", ("read", "write")), ("QK", ("query", "key"))):
        # orient each singular pair: the + pole is the read (query) side's larger extreme
        _, _, vmax, vmin = ext[(circuit, a)]
        flip = (vmax < -vmin)[:, None]
        for side in (a, b):
            top, bot, _, _ = ext[(circuit, side)]
            plus, minus = torch.where(flip, bot, top), torch.where(flip, top, bot)
            token_ids[circuit][f"{side}+"] = plus.view(L, H, n_dir, top_k)
            token_ids[circuit][f"{side}-"] = minus.view(L, H, n_dir, top_k)
    uniq = torch.unique(torch.cat([t.flatten() for d in token_ids.values() for t in d.values()])).tolist()
    vocab = dict(zip(uniq, _decode_ids(model, uniq)))
    tokens_str = {
        c: {s: [[[[vocab[i] for i in row] for row in hd] for hd in lay] for lay in t.tolist()] for s, t in d.items()}
        for c, d in token_ids.items()
    }
    return HeadCircuitsResult(
        ov_singular=svd["OV"][1].float(),
        qk_singular=svd["QK"][1].float(),
        copying=cp.copying,
        copy_suppression=cp.suppression,
        null_max=dict(cp.null_max),
        eigenvalue_copying=eigenvalue_copying.float(),
        positive_fraction=positive.float(),
        eigenvalues=torch.stack([eig.real, eig.imag], -1).float(),
        token_ids=token_ids,
        tokens_str=tokens_str,
        model_name=model.name,
        settings={
            "method": "OV/QK SVD (Elhage et al. 2021) and copying score (own token in the top k of the OV output)",
            "fold_norms": fold_norms,
            "norm_notes": fw.notes,
            "n_directions": n_dir,
            "top_k": top_k,
            "eigenvalue_copying": (
                "sum(lambda)/sum(|lambda|) over eigenvalues of W_O W_U W_E W_V (= nonzero eigenvalues of W_E W_OV W_U)"
            ),
            **cp.settings(),
            "token_reading": "direct path: W_E for read/query/key sides, W_U (final norm folded) for the written side",
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
