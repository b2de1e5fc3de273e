"""How good an SAE is, each on the training rows and on held-out rows:

* ``l0``: mean number of non-zero features per token;
* ``explained_variance``: ``1 - Σ||x - x̂||² / Σ||x - x̄||²`` where ``x̄`` is the mean of the *evaluated* rows,
  so predicting that mean scores exactly 0 and a perfect reconstruction 1;
* ``mse``: mean squared error per element (raw activation units);
* ``dead_frac``: fraction of features that never fire on the evaluated rows;
* ``ce_score`` (with a model, :func:`ce_score`): the SAE spliced into the forward pass at its hook with an
  :class:`interplab.Apply` intervention, ``(CE_zero − CE_sae) / (CE_zero − CE_clean)`` where ``CE_zero`` is the
  next-token cross-entropy with the hook **zero-ablated** (Ablate how="zero") — 1 means the SAE loses nothing,
  0 means it is as bad as deleting the activation (the loss-recovered score of Bricken et al. 2023 and
  Gao et al. 2024).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from interplab.analyses.sae.data import TensorData
from interplab.analyses.sae.model import SAE
from interplab.io.activations import ActivationDataset, Stats

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["ce_score", "evaluate", "explained_variance"]


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``1 - Σ||x - x̂||² / Σ||x - mean(x)||²`` (predicting the mean: 0; perfect reconstruction: 1)."""
    x, x_hat = x.double(), x_hat.double()
    return float(1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


@torch.no_grad()
def evaluate(
    sae: SAE | Callable[[torch.Tensor], torch.Tensor],
    data: TensorData | ActivationDataset | torch.Tensor,
    batch_size: int = 4096,
    row_errors: bool = False,
) -> dict[str, Any]:
    """Streaming ``l0``, ``explained_variance``, ``mse``, ``dead_frac`` (and per-feature ``density``) of an SAE
    — or of any reconstruction function ``x -> x̂`` (then L0 and dead_frac are absent) — on ``data``.
    ``row_errors``: also ``row_sq_err`` (``||x - x̂||²`` of every row, float64 of the float32 error) and
    ``total_var`` (``E||x - x̄||²`` of the rows), what the SAE-vs-PCA gap of :mod:`.controls` needs.

    Args:
        sae: the SAE, or a function from rows to reconstructions.
        data: the rows to evaluate.
        batch_size: rows per batch.
        row_errors: also return every row's squared error and the rows' total variance.
    """
    if isinstance(data, torch.Tensor):
        data = TensorData(data)
    st = Stats()
    sse, n, l0 = 0.0, 0, 0.0
    counts = None
    rows = [] if row_errors else None
    for x in data.batches(batch_size, shuffle=False):
        st.update(x)
        if isinstance(sae, SAE):
            f = sae.encode(x)
            xh = sae.decode(f)
            nz = f > 0
            l0 += float(nz.sum())
            counts = nz.sum(0) if counts is None else counts + nz.sum(0)
        else:
            xh = sae(x)
        sse += float(((x.double() - xh.double()) ** 2).sum())
        if rows is not None:
            rows.append(((x - xh) ** 2).double().sum(-1))
        n += x.shape[0]
    tv = st.total_var * n
    out = {"n": n, "explained_variance": 1 - sse / tv if tv > 0 else float("nan"), "mse": sse / (n * data.d)}
    if counts is not None:
        out["l0"] = l0 / n
        out["dead_frac"] = float((counts == 0).float().mean())
        out["density"] = counts.double() / n
    if rows is not None:
        out["row_sq_err"] = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.float64)
        out["total_var"] = st.total_var
    return out


@torch.no_grad()
def ce_score(
    model: Model,
    sae: SAE,
    hook: str,
    tokens: torch.Tensor,
    batch: int = 8,
    skip_first: bool = False,
    baseline: dict | None = None,
) -> dict:
    """Next-token cross-entropy (nats/token) clean, with the SAE's reconstruction spliced in at ``hook``
    (``Apply``), and with ``hook`` zero-ablated (``Ablate``); ``ce_score = (CE_zero - CE_sae) / (CE_zero - CE_clean)``.
    ``skip_first``: keep position 0 (a BOS token the SAE never saw) unchanged. ``baseline``: the result of an
    earlier call on the same tokens, whose clean and zero-ablated CEs are reused instead of recomputed.

    Args:
        model: the model the SAE was trained on.
        sae: the SAE to splice in.
        hook: the hook point the SAE reads and replaces.
        tokens: token ids ``[n_seq, seq_len]``.
        batch: sequences per forward pass.
        skip_first: leave position 0 unchanged.
        baseline: an earlier result on the same tokens (its clean and zero-ablated CEs are reused).
    """
    from interplab.hooks import Ablate, Apply

    def splice(x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return sae(x.reshape(x.shape[0], x.shape[1], -1).float()).to(x.dtype).reshape(x.shape)

    positions = slice(1, None) if skip_first else None
    runs = {"sae": [Apply(hook, fn=splice, positions=positions)]}
    if baseline is None:
        runs = {"clean": [], **runs, "zero": [Ablate(hook, how="zero", positions=positions)]}
    tot = dict.fromkeys(runs, 0.0)
    n = 0
    for i in range(0, tokens.shape[0], batch):
        t = tokens[i : i + batch]
        tgt = t[:, 1:].reshape(-1)
        for name, iv in runs.items():
            logits = model.run(t, interventions=iv).logits
            tot[name] += float(
                F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tgt, reduction="sum")
            )
        n += tgt.numel()
    ce = {k: v / n for k, v in tot.items()}
    if baseline is not None:
        if baseline["ce_tokens"] != n:
            raise ValueError(f"the baseline was measured on {baseline['ce_tokens']} tokens, these are {n}.")
        ce["clean"], ce["zero"] = baseline["ce_clean"], baseline["ce_zero_ablation"]
    denom = ce["zero"] - ce["clean"]
    return {
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero_ablation": ce["zero"],
        "ce_tokens": n,
        "ce_score": (ce["zero"] - ce["sae"]) / denom if denom != 0 else float("nan"),
        "ce_baseline": "zero ablation",
    }
