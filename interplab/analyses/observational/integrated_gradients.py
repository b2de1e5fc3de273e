"""Integrated gradients over the input tokens (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep
Networks"), with its completeness check.

The output ``F`` is ``logit(answer) − logit(wrong)`` (or ``logit(answer)``) at one position, seen as a function of
the token embeddings ``x`` (``hook_embed``, ``[pos, d_model]``; positions and everything after the embedding are
the model's own). With a baseline ``x'`` the attribution of token ``i`` is

    IG_i = Σ_d (x_id − x'_id) · ∫_0^1 ∂F/∂x_id (x' + α (x − x')) dα,

and *completeness* says ``Σ_i IG_i = F(x) − F(x')``. The integral is computed by quadrature over ``n_steps``
points: Gauss–Legendre (default, as Captum's ``IntegratedGradients``) or the trapezoid rule on an even grid. The
gap ``|Σ_i IG_i − (F(x) − F(x'))|`` measures how well the quadrature converged; when it exceeds ``tolerance ×
|F(x) − F(x')|`` the result is *not* labelled integrated gradients (``converged`` is False, the headline's
``method`` says so and suggests more steps), because the numbers are then a poor estimate of the integral.

Baselines: ``"zero"`` (the zero embedding, Sundararajan et al.'s choice for text), ``"pad"`` (the pad/EOS token's
embedding at every position) or a tensor ``[pos, d_model]`` (e.g. one token's embedding at every position). In a
pre-norm model the zero baseline is a hard path: the first norm is scale-invariant, so ``F(x' + α(x − x'))`` changes
mostly for tiny ``α`` and the quadrature needs many points (a tiny random Llama: completeness gap 27% of
``F(x) − F(x')`` at 40 Gauss–Legendre points, 0.4% at 100); a token's embedding as the baseline converged there with
8. The completeness check reports which case a result is in. With ``keep_bos`` (default) a leading BOS token keeps
its embedding in the baseline, so it gets no attribution (the model never sees a prompt without it).

Checked against Captum's ``LayerIntegratedGradients`` on the embedding layer (tests/analyses/observational).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from interplab.hooks import Apply, HookContext
from interplab.io.results import Result

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = ["IntegratedGradientsResult", "integrated_gradients", "quadrature"]

Quadrature = Literal["gausslegendre", "trapezoid"]


def quadrature(n_steps: int, method: Quadrature = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``α`` in [0, 1] and weights summing to 1 for ``∫_0^1 f(α) dα ≈ Σ w_k f(α_k)``."""
    if n_steps < 2:
        raise ValueError(f"n_steps must be at least 2, got {n_steps}.")
    if method == "gausslegendre":
        t, w = np.polynomial.legendre.leggauss(n_steps)
        return torch.tensor((t + 1) / 2, dtype=torch.float64), torch.tensor(w / 2, dtype=torch.float64)
    if method == "trapezoid":
        a = torch.linspace(0, 1, n_steps, dtype=torch.float64)
        w = torch.full((n_steps,), 1.0 / (n_steps - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (n_steps - 1)
        return a, w
    raise ValueError(f"method must be 'gausslegendre' or 'trapezoid', not {method!r}.")


@dataclass(kw_only=True)
class IntegratedGradientsResult(Result):
    """Per-token attributions of ``F`` (see the module docstring) and the completeness check."""

    JSON_ONLY = True
    KIND: ClassVar[str] = "integrated_gradients"
    FILE: ClassVar[str] = "integrated_gradients.json"

    prompt: str
    str_tokens: list[str]
    attributions: torch.Tensor  # [pos]
    f_input: float
    f_baseline: float
    answer: str
    wrong: str | None
    position: int
    n_steps: int
    tolerance: float
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> float:
        """``F(x) − F(x')``, what the attributions should sum to."""
        return self.f_input - self.f_baseline

    @property
    def completeness_gap(self) -> float:
        return abs(float(self.attributions.double().sum()) - self.delta)

    @property
    def converged(self) -> bool:
        """Completeness holds within ``tolerance × |F(x) − F(x')|`` (absolute 1e-6 when that is 0)."""
        return self.completeness_gap <= max(self.tolerance * abs(self.delta), 1e-6)

    def headline(self) -> dict[str, Any]:
        order = self.attributions.abs().argsort(descending=True)[:5].tolist()
        return {
            "method": "integrated gradients"
            if self.converged
            else (
                f"not integrated gradients: completeness fails (gap {self.completeness_gap:.3g} > "
                f"{self.tolerance} x |F(x) - F(baseline)|); rerun with more steps (n_steps={2 * self.n_steps})"
            ),
            "converged": self.converged,
            "metric": f"logit({self.answer!r})" + (f" - logit({self.wrong!r})" if self.wrong is not None else ""),
            "f_input": round(self.f_input, 5),
            "f_baseline": round(self.f_baseline, 5),
            "sum_attributions": round(float(self.attributions.double().sum()), 5),
            "completeness_gap": self.completeness_gap,
            "n_steps": self.n_steps,
            "top_tokens": [[i, self.str_tokens[i], round(float(self.attributions[i]), 5)] for i in order],
        }

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            {"position": range(len(self.str_tokens)), "token": self.str_tokens, "attribution": self.attributions}
        )

    def plot(self) -> go.Figure:
        import plotly.graph_objects as go

        labels = [f"{i}:{t}" for i, t in enumerate(self.str_tokens)]
        fig = go.Figure(go.Bar(x=labels, y=self.attributions.tolist()))
        status = "" if self.converged else " — NOT converged (completeness fails)"
        fig.update_layout(
            title={"text": f"Integrated gradients of {self.headline()['metric']}{status}"},
            xaxis={"title": "token", "type": "category"},
            yaxis={"title": "attribution"},
        )
        return fig


def integrated_gradients(
    model: Model,
    prompt: str | torch.Tensor | list[int],
    answer: str | int,
    wrong: str | int | None = None,
    *,
    baseline: Literal["zero", "pad"] | torch.Tensor = "zero",
    keep_bos: bool = True,
    n_steps: int = 50,
    method: Quadrature = "gausslegendre",
    position: int = -1,
    tolerance: float = 0.05,
    batch_size: int = 16,
    prepend_bos: bool | None = None,
) -> IntegratedGradientsResult:
    """Integrated gradients of ``logit(answer) [− logit(wrong)]`` at ``position`` over the prompt's token
    embeddings (Sundararajan et al. 2017; see the module docstring).

    Args:
        model: the model.
        prompt: text, or token ids for a model without a tokenizer.
        answer: the answer (its first token) or a token id; ``wrong``: the competing answer, or None.
        baseline: ``"zero"``, ``"pad"`` or an embedding tensor ``[pos, d_model]``.
        keep_bos: a leading BOS token keeps its embedding in the baseline.
        n_steps: quadrature points (more steps, smaller completeness gap).
        method: ``"gausslegendre"`` or ``"trapezoid"``.
        position: where the logits are read (default the last token).
        tolerance: completeness must hold within this fraction of ``|F(x) − F(x')|``.
        batch_size: interpolation points per forward/backward pass.
    """
    tokens, text = model.prompt_tokens(prompt, prepend_bos, caller="integrated_gradients")
    n_pos = tokens.shape[1]
    if not -n_pos <= position < n_pos:
        raise IndexError(f"position {position} is out of range for a prompt of {n_pos} tokens.")
    a_id, _ = model.first_token_id(answer, "answer")
    w_id = model.first_token_id(wrong, "wrong answer")[0] if wrong is not None else None
    alphas, weights = quadrature(n_steps, method)

    with torch.no_grad():
        _, cache = model.run(tokens, cache=["hook_embed"])
    x = cache["hook_embed"][0].detach()  # [pos, d]
    if isinstance(baseline, str):
        if baseline == "zero":
            base = torch.zeros_like(x)
        elif baseline == "pad":
            tok = model.tokenizer
            pad = None if tok is None else (tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
            if pad is None:
                raise ValueError("baseline='pad' needs a tokenizer with a pad or EOS token; use baseline='zero'.")
            with torch.no_grad():
                _, pc = model.run(torch.full_like(tokens, int(pad)), cache=["hook_embed"])
            base = pc["hook_embed"][0].detach()
        else:
            raise ValueError(f"baseline must be 'zero', 'pad' or a tensor [pos, d_model], not {baseline!r}.")
    else:
        base = torch.as_tensor(baseline, dtype=x.dtype)
        if tuple(base.shape) != tuple(x.shape):
            raise ValueError(f"baseline has shape {tuple(base.shape)}; the prompt's embeddings are {tuple(x.shape)}.")
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    if keep_bos and bos is not None and int(tokens[0, 0]) == bos:
        base = base.clone()
        base[0] = x[0]
    diff = x - base

    def metric(logits: torch.Tensor) -> torch.Tensor:
        out = logits[:, position, a_id]
        return out - logits[:, position, w_id] if w_id is not None else out

    def interpolate(a: torch.Tensor):
        def fn(_x: torch.Tensor, _ctx: HookContext) -> torch.Tensor:
            return base + a.to(x.dtype)[:, None, None] * diff

        return Apply("hook_embed", fn=fn)

    from interplab.analyses.causal.engine import probe_gradients

    total = torch.zeros_like(x, dtype=torch.float64)
    for s in range(0, n_steps, batch_size):
        a = alphas[s : s + batch_size]
        _, _, grads = probe_gradients(
            model, tokens.repeat(len(a), 1), ["hook_embed"], metric, interventions=[interpolate(a)]
        )
        total += (grads["hook_embed"].double() * weights[s : s + batch_size, None, None]).sum(0)
    with torch.no_grad():
        ends = model.run(tokens.repeat(2, 1), interventions=[interpolate(torch.tensor([1.0, 0.0]))]).logits
        f_x, f_b = metric(ends).double().tolist()
    attributions = (diff.double() * total).sum(-1).float()
    return IntegratedGradientsResult(
        prompt=text,
        str_tokens=model.to_str_tokens(tokens[0]) if model.tokenizer is not None else [str(t) for t in tokens[0]],
        attributions=attributions,
        f_input=float(f_x),
        f_baseline=float(f_b),
        answer=answer if isinstance(answer, str) else str(a_id),
        wrong=None if wrong is None else (wrong if isinstance(wrong, str) else str(w_id)),
        position=position % n_pos,
        n_steps=n_steps,
        tolerance=tolerance,
        model_name=model.name,
        settings={
            "baseline": baseline if isinstance(baseline, str) else "tensor",
            "keep_bos": keep_bos,
            "method": method,
        },
    )
