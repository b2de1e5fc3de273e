"""Direct logit attribution (DLA): how much each component writes the answer's logit directly.

After Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits" (the residual stream
is a sum, so the logits are a sum of per-component terms once the final norm is frozen) and Wang et
al. (2022), "Interpretability in the Wild" (IOI: the logit difference " Mary" − " John"), with
TransformerLens's ``cache.apply_ln_to_stack`` / ``logit_attrs`` conventions.

The final residual stream at the chosen position is a sum of what every component wrote::

    resid_final = embed (+ pos_embed) + sum_L (attn_out_L + mlp_out_L)
    attn_out_L  = sum_h result_{L,h} + b_O_L           (result: ``blocks.L.attn.hook_result``)

The final norm is not linear, but with its scale *frozen* at the real final residual it is:
``norm(x) = w * (C x) / s + b`` with ``s = sqrt(mean(x^2) + eps)`` (RMSNorm) or
``sqrt(var(x) + eps)`` (LayerNorm, ``C`` = subtract the mean; RMSNorm has no ``C`` and no ``b``),
``s`` computed once from ``resid_final``. Then each component ``c`` contributes::

    dla(c) = (w * (C c) / s) · (W_U[:, answer] − W_U[:, distractor])

(just ``W_U[:, answer]`` without a distractor), and the biases contribute the final norm's bias
``b · (W_U[:, a] − W_U[:, d])`` and the unembedding's bias ``b_U[a] − b_U[d]``. Because the map
is linear with ``s`` frozen, **the components sum exactly to the model's logit (difference)**
(tested to ~1e-5 relative on tiny RMSNorm and LayerNorm models of every family, and on SmolLM2).
Gemma's final logit soft-cap ``tanh(x/c)·c`` is applied after this sum: the components sum to the
*pre-cap* logit difference (``logit_diff_precap``; ``logit_diff`` is the model's own, capped).

Gemma 3 normalises the attention output before adding it (``post_attention_layernorm``); its
per-head results sum to that norm's *input*, so they are passed through the norm with its scale
frozen as well (``w * r_h / s_post``), which keeps per-head terms summing exactly to attn_out.

Note: DLA is *direct* effect only — a head whose output is read by later heads or MLPs (e.g. IOI's
S-inhibition heads) shows little DLA however important it is; use ablation or patching for total effect.

>>> res = direct_logit_attribution(model, "When Mary and John went to the store, John gave a drink to",
...                                answer=" Mary", distractor=" John")
>>> res.headline()["top_heads"][:3]          # [[layer, head, contribution], ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interplab.io.results import Result
from interplab.models.folding import NormInfo, norm_info

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = ["DLAResult", "apply_final_norm_to_stack", "direct_logit_attribution", "logit_direction"]


def _apply_frozen(ni: NormInfo | None, stack: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``w * (C x) / s`` for every row of ``stack [..., d]`` with a frozen ``scale`` (no bias)."""
    if ni is None or ni.kind == "none":
        return stack
    x = stack - stack.mean(-1, keepdim=True) if ni.kind == "LN" else stack
    x = x / scale
    return x * ni.weight.to(x) if ni.weight is not None else x


def apply_final_norm_to_stack(model: Model, stack: torch.Tensor, resid_final: torch.Tensor) -> torch.Tensor:
    """The final norm applied to each component of ``stack [..., d_model]`` *linearly*, with its scale
    frozen at ``resid_final [d_model]`` (the real final residual stream at the same position): centred
    for LayerNorm, divided by the scale, times the norm's weight; the norm's bias is *not* added
    (it is one separate term). TransformerLens's ``apply_ln_to_stack``."""
    ni = norm_info(model.adapter.ln_final())
    if ni is None:
        raise ValueError(
            f"final norm {type(model.adapter.ln_final()).__name__} is not a LayerNorm/RMSNorm; "
            "direct logit attribution needs one of those (or none)."
        )
    scale = ni.scale(resid_final.to(stack.dtype))
    return _apply_frozen(ni, stack, scale)


def logit_direction(model: Model, answer_id: int, distractor_id: int | None = None) -> torch.Tensor:
    """``W_U[:, answer] − W_U[:, distractor]`` (or ``W_U[:, answer]``), ``[d_model]``."""
    W_U = model.W_U
    d = W_U[:, answer_id].clone()
    if distractor_id is not None:
        d -= W_U[:, distractor_id]
    return d


def _decode(model: Model, ids) -> list[str]:
    if model.tokenizer is None:
        return [f"#{int(i)}" for i in ids]
    return [model.tokenizer.decode([int(i)]) for i in ids]


@dataclass
class DLAResult(Result):
    """Direct logit attribution of one prompt at one position (see the module docstring).

    ``heads [L, H]``: each head's result; ``attn [L]``: each layer's attn_out (``heads.sum(-1) +
    attn_bias``); ``attn_bias [L]``: the out-projection bias; ``mlp [L]``: each MLP's output (zeros for
    attention-only models); ``embed``/``pos_embed``: the embeddings; ``ln_bias``/``unembed_bias``: the
    final norm's and the unembedding's biases. ``total`` is the sum of all of them and equals
    ``logit_diff_precap``, the model's logit difference before any soft-cap."""

    JSON_ONLY = True

    prompt: str
    str_tokens: list[str]
    position: int
    answer: str
    answer_id: int
    distractor: str | None
    distractor_id: int | None
    heads: torch.Tensor  # [L, H]
    attn: torch.Tensor  # [L]
    attn_bias: torch.Tensor  # [L]
    mlp: torch.Tensor  # [L]
    embed: float
    pos_embed: float | None
    ln_bias: float
    unembed_bias: float
    logit_diff: float
    logit_diff_precap: float
    final_scale: float
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    KIND: ClassVar[str] = "direct_logit_attribution"
    FILE: ClassVar[str] = "dla.json"  # one JSON file (several lens results share a directory)

    @property
    def n_layers(self) -> int:
        return int(self.heads.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.heads.shape[1])

    @property
    def total(self) -> float:
        """Sum of every component and bias term (= ``logit_diff_precap`` up to float rounding)."""
        return float(
            self.embed
            + (self.pos_embed or 0.0)
            + self.attn.double().sum()
            + self.mlp.double().sum()
            + self.ln_bias
            + self.unembed_bias
        )

    @property
    def metric(self) -> str:
        return f"logit({self.answer!r})" + (f" − logit({self.distractor!r})" if self.distractor is not None else "")

    def components(self) -> list[tuple[str, float]]:
        """Every term in residual-stream order: ``embed``, ``pos_embed``, ``L{l}.attn``, ``L{l}.mlp``, …,
        ``ln_final.bias``, ``unembed.bias``."""
        out = [("embed", float(self.embed))]
        if self.pos_embed is not None:
            out.append(("pos_embed", float(self.pos_embed)))
        has_mlp = self.settings.get("has_mlp", True)
        for layer in range(self.n_layers):
            out.append((f"L{layer}.attn", float(self.attn[layer])))
            if has_mlp:
                out.append((f"L{layer}.mlp", float(self.mlp[layer])))
        out += [("ln_final.bias", float(self.ln_bias)), ("unembed.bias", float(self.unembed_bias))]
        return out

    def top_heads(self, n: int = 10, by: str = "abs") -> list[list]:
        """``[layer, head, contribution]`` sorted by ``|contribution|`` (``by="abs"``), most positive
        (``"pos"``) or most negative (``"neg"``)."""
        h = self.heads.flatten()
        key = {"abs": h.abs(), "pos": h, "neg": -h}[by]
        idx = key.topk(min(n, h.numel())).indices.tolist()
        H = self.n_heads
        return [[i // H, i % H, round(float(h[i]), 5)] for i in idx]

    def headline(self, n: int = 5) -> dict[str, Any]:
        """The metric, the real logit difference and the components' total, the top heads (by |DLA|,
        and the most positive / negative), and the layers whose attention / MLP matter most."""
        layer_terms = [(name, v) for name, v in self.components() if name.startswith("L")]
        layer_terms.sort(key=lambda t: -abs(t[1]))
        return {
            "model": self.model_name,
            "prompt": self.prompt,
            "metric": self.metric,
            "position": self.position,
            "logit_diff": round(self.logit_diff, 5),
            "logit_diff_precap": round(self.logit_diff_precap, 5),
            "dla_total": round(self.total, 5),
            "top_heads": self.top_heads(n, "abs"),
            "top_positive_heads": self.top_heads(n, "pos"),
            "top_negative_heads": self.top_heads(n, "neg"),
            "top_layer_components": [[name, round(v, 5)] for name, v in layer_terms[:n]],
            "embed": round(float(self.embed), 5),
        }

    def to_frame(self, which: str = "heads") -> pd.DataFrame:
        """``"heads"``: one row per head (layer, head, contribution); ``"layers"``: one row per layer
        (attn, attn_bias, mlp, heads_sum); ``"components"``: every term in residual-stream order."""
        import pandas as pd

        if which == "heads":
            L, H = self.n_layers, self.n_heads
            return pd.DataFrame(
                {
                    "layer": [layer for layer in range(L) for _ in range(H)],
                    "head": [h for _ in range(L) for h in range(H)],
                    "contribution": self.heads.flatten().tolist(),
                }
            )
        if which == "layers":
            return pd.DataFrame(
                {
                    "layer": list(range(self.n_layers)),
                    "attn": self.attn.tolist(),
                    "attn_bias": self.attn_bias.tolist(),
                    "heads_sum": self.heads.sum(-1).tolist(),
                    "mlp": self.mlp.tolist(),
                }
            )
        if which == "components":
            return pd.DataFrame(self.components(), columns=["component", "contribution"])
        raise ValueError(f"which must be 'heads', 'layers' or 'components', not {which!r}.")

    def plot(self, kind: str = "both") -> go.Figure:
        """``kind="heads"``: heatmap layers × heads (diverging, centred at 0); ``"layers"``: attn and MLP
        contribution per layer (bars); ``"both"`` (default): side by side."""
        import html

        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        if kind not in ("both", "heads", "layers"):
            raise ValueError(f"kind must be 'both', 'heads' or 'layers', not {kind!r}.")
        L, H = self.n_layers, self.n_heads
        m = float(self.heads.abs().max()) or 1.0
        heat = go.Heatmap(
            z=self.heads.tolist(),
            x=list(range(H)),
            y=list(range(L)),
            colorscale="RdBu",
            zmid=0,
            zmin=-m,
            zmax=m,
            colorbar={"title": {"text": "DLA"}, "len": 0.8},
            hovertemplate="L%{y} H%{x}<br>%{z:.3f}<extra></extra>",
        )
        bars = [go.Bar(y=list(range(L)), x=self.attn.tolist(), orientation="h", name="attn", marker_color="#4c78a8")]
        if self.settings.get("has_mlp", True):
            bars.append(
                go.Bar(y=list(range(L)), x=self.mlp.tolist(), orientation="h", name="mlp", marker_color="#f58518")
            )
        metric = html.escape(self.metric, quote=False)
        title = f"Direct logit attribution of {metric}"
        if self.model_name:
            title += f" — {html.escape(self.model_name, quote=False)}"
        if kind == "heads":
            fig = go.Figure(heat)
            fig.update_xaxes(title_text="head", dtick=1)
            fig.update_yaxes(title_text="layer", autorange="reversed", dtick=1)
        elif kind == "layers":
            fig = go.Figure(bars)
            fig.update_layout(barmode="group")
            fig.update_xaxes(title_text="contribution")
            fig.update_yaxes(title_text="layer", autorange="reversed", dtick=1)
        else:
            fig = make_subplots(
                rows=1,
                cols=2,
                shared_yaxes=True,
                column_widths=[0.65, 0.35],
                horizontal_spacing=0.03,
                subplot_titles=["per head", "per layer"],
            )
            fig.add_trace(heat, row=1, col=1)
            for b in bars:
                fig.add_trace(b, row=1, col=2)
            fig.update_layout(barmode="group")
            fig.update_xaxes(title_text="head", dtick=1, row=1, col=1)
            fig.update_xaxes(title_text="contribution", row=1, col=2)
            fig.update_yaxes(title_text="layer", autorange="reversed", dtick=1, row=1, col=1)
        fig.update_layout(title={"text": title}, height=max(360, 20 * L + 160), legend={"orientation": "h", "y": -0.1})
        return fig


def direct_logit_attribution(
    model: Model,
    prompt: str | torch.Tensor | list[int],
    answer: str | int,
    distractor: str | int | None = None,
    position: int = -1,
    prepend_bos: bool | None = None,
) -> DLAResult:
    """Direct logit attribution (see the module docstring) of ``logit(answer) − logit(distractor)``
    (or ``logit(answer)`` when ``distractor`` is None) at ``position`` (default: the last token)
    to the embeddings, every layer's attention and MLP output, and every head.

    ``prompt``: text, or token ids (1-D or ``[1, pos]``) for models without a tokenizer. ``answer`` /
    ``distractor``: strings (their first token is used; ``settings`` records how many tokens each had)
    or token ids."""
    tokens, prompt_text = model.prompt_tokens(prompt, prepend_bos, caller="direct_logit_attribution")
    n_pos = tokens.shape[1]
    if n_pos == 0:
        raise ValueError("The prompt is empty (no tokens).")
    if not -n_pos <= position < n_pos:
        raise IndexError(f"position {position} is out of range for a prompt of {n_pos} tokens.")
    pos = position % n_pos
    a_id, a_n = model.first_token_id(answer, "answer")
    d_id, d_n = model.first_token_id(distractor, "distractor") if distractor is not None else (None, 0)

    cfg = model.cfg
    L = cfg.n_layers
    valid = set(model.hook_names())
    has_mlp = "blocks.0.hook_mlp_out" in valid
    has_pos = "hook_pos_embed" in valid
    final = f"blocks.{L - 1}.hook_resid_post"
    names = ["hook_embed", final, "ln_final.hook_normalized"] + (["hook_pos_embed"] if has_pos else [])
    for layer in range(L):
        names += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.attn.hook_result"]
        if has_mlp:
            names.append(f"blocks.{layer}.hook_mlp_out")

    f64 = torch.float64
    with torch.no_grad():
        logits, cache = model.run(tokens, cache=names)
        ln_f = model.adapter.ln_final()
        nf = norm_info(ln_f)
        if nf is None:
            raise ValueError(
                f"final norm {type(ln_f).__name__} is not a LayerNorm/RMSNorm; DLA needs one of those (or none)."
            )
        resid = cache[final][0, pos].to(f64)
        scale = nf.scale(resid)
        direction = logit_direction(model, a_id, d_id).to(f64)

        def dla(x: torch.Tensor) -> torch.Tensor:  # [..., d] -> [...]
            return _apply_frozen(nf, x.to(f64), scale) @ direction

        embed = float(dla(cache["hook_embed"][0, pos]))
        pos_embed = None
        if has_pos:  # [b, p, d]; a toy model's learned positions arrive without the batch dim, [p, d]
            pe = cache["hook_pos_embed"]
            pos_embed = float(dla(pe[0, pos] if pe.ndim == 3 else pe[pos]))
        attn = torch.stack([dla(cache[f"blocks.{layer}.hook_attn_out"][0, pos]) for layer in range(L)])
        mlp = (
            torch.stack([dla(cache[f"blocks.{layer}.hook_mlp_out"][0, pos]) for layer in range(L)])
            if has_mlp
            else torch.zeros(L, dtype=f64)
        )
        heads, attn_bias = [], []
        post_norm_layers = []
        for layer in range(L):
            res = cache[f"blocks.{layer}.attn.hook_result"][0, pos].to(f64)  # [H, d]
            b_o = model.adapter.b_o(layer)
            b_o = b_o.detach().to(f64) if b_o is not None else torch.zeros(cfg.d_model, dtype=f64)
            out_mod = model.adapter.attn_output_norm(layer)
            if out_mod is not None:  # Gemma 3: attn_out = post_norm(sum_h result_h + b_O)
                post = norm_info(out_mod)
                if post is None:
                    raise ValueError(
                        f"layer {layer}: attention output module {type(out_mod).__name__} is not a norm; "
                        "per-head attribution does not know how to pass results through it."
                    )
                s_post = post.scale(res.sum(0) + b_o)
                res = _apply_frozen(post, res, s_post)
                b_o = _apply_frozen(post, b_o, s_post) + (post.bias.to(f64) if post.bias is not None else 0.0)
                post_norm_layers.append(layer)
            heads.append(dla(res))
            attn_bias.append(dla(b_o))
        heads_t, attn_bias_t = torch.stack(heads), torch.stack(attn_bias)

        ln_bias = float(nf.bias.to(f64) @ direction) if nf.bias is not None else 0.0
        ub = getattr(model.adapter.unembed(), "bias", None)
        unembed_bias = float(ub[a_id] - (ub[d_id] if d_id is not None else 0.0)) if ub is not None else 0.0

        lg = logits[0, pos].to(f64)
        logit_diff = float(lg[a_id] - (lg[d_id] if d_id is not None else 0.0))
        precap = model.adapter.unembed()(cache["ln_final.hook_normalized"][0, pos]).to(f64)
        logit_diff_precap = float(precap[a_id] - (precap[d_id] if d_id is not None else 0.0))

    cap = getattr(getattr(model.hf, "config", None), "final_logit_softcapping", None)
    return DLAResult(
        prompt=prompt_text,
        str_tokens=_decode(model, tokens[0].tolist()),
        position=pos,
        answer=_decode(model, [a_id])[0],
        answer_id=a_id,
        distractor=_decode(model, [d_id])[0] if d_id is not None else None,
        distractor_id=d_id,
        heads=heads_t.float(),
        attn=attn.float(),
        attn_bias=attn_bias_t.float(),
        mlp=mlp.float(),
        embed=embed,
        pos_embed=pos_embed,
        ln_bias=ln_bias,
        unembed_bias=unembed_bias,
        logit_diff=logit_diff,
        logit_diff_precap=logit_diff_precap,
        final_scale=float(scale),
        model_name=model.name,
        settings={
            "method": "direct logit attribution; final norm scale frozen at the final residual (TL apply_ln_to_stack)",
            "final_norm": nf.kind,
            "final_logit_softcapping": cap,
            "has_mlp": has_mlp,
            "post_attention_norm_frozen": bool(post_norm_layers),
            "answer_n_tokens": a_n,
            "distractor_n_tokens": d_n,
            "prepend_bos": prepend_bos,
            "n_layers": L,
        },
    )
