"""Logit lens: read every layer's residual stream through the model's own unembedding.

After nostalgebraist (2020), "interpreting GPT: the logit lens" (LessWrong,
https://www.lesswrong.com/posts/AcKRB8wDpdaN6v6ru/interpreting-gpt-the-logit-lens).

For each layer ``L`` the residual stream after the block, ``blocks.L.hook_resid_post``, is decoded
as if it were the last layer's::

    lens_L = softcap(unembed(ln_final(resid_post_L)))

where ``ln_final`` is the model's final norm module (RMSNorm / LayerNorm, applied per position with
that position's own statistics), ``unembed`` its unembedding module (``W_U`` plus the bias, if any)
and ``softcap`` Gemma's ``tanh(x / c) * c`` when the config sets ``final_logit_softcapping``.
Nothing is trained (unlike the *tuned* lens); the lens only asks how far the residual stream
already points at the model's eventual prediction.

Invariant (tested): at the last layer this is exactly what the model computes, so
``lens_{n_layers-1}`` equals the model's logits.

>>> res = logit_lens(model, "The Eiffel Tower is located in the city of", answer=" Paris")
>>> res.headline()["first_layer_top1"], res.answer_prob[-1]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = ["LogitLensResult", "display_token", "logit_lens"]

from interplab.io.results import Result
from interplab.models.scoring import unembed_resid

_CHUNK_ELEMENTS = 64 * 2**20  # float32 logits per unembedding matmul (256 MB)


def display_token(tok: str) -> str:
    """A token made readable in a table or plot cell: shown as is when it is printable and not blank,
    otherwise quoted with escapes (``' '``, ``'\\n'``, ``'\\x16'``)."""
    if tok.strip() and tok.isprintable():
        return tok
    return repr(tok)


@dataclass
class LogitLensResult(Result):
    """What the logit lens saw: per layer and position the top-k next-token predictions, and the
    answer token's rank and probability at the last position per layer.

    ``layers`` holds the layer index of each row (``-1`` = the embeddings, ``blocks.0.hook_resid_pre``,
    present only with ``include_embed=True``). Tensors: ``top_ids`` / ``top_probs`` ``[layer, pos, k]``,
    ``answer_rank`` (1 = the lens's top prediction), ``answer_prob`` and ``kl_to_final``
    (KL(model's final distribution ‖ lens distribution) at the last position, nats) ``[layer]``.
    """

    JSON_ONLY = True

    prompt: str
    str_tokens: list[str]
    layers: list[int]
    top_tokens: list[list[list[str]]]  # [layer][pos][k]
    top_ids: torch.Tensor  # [layer, pos, k] long
    top_probs: torch.Tensor  # [layer, pos, k] float
    answer: str
    answer_id: int
    answer_rank: torch.Tensor  # [layer] long, 1 = top
    answer_prob: torch.Tensor  # [layer] float
    kl_to_final: torch.Tensor  # [layer] float
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    KIND: ClassVar[str] = "logit_lens"
    FILE: ClassVar[str] = "logit_lens.json"  # one JSON file (several lens results share a directory)

    # ------------------------------------------------------------------ views
    @property
    def layer_labels(self) -> list[str]:
        return ["embed" if layer < 0 else str(layer) for layer in self.layers]

    @property
    def top_k(self) -> int:
        return int(self.top_ids.shape[-1])

    def headline(self) -> dict[str, Any]:
        """Headline numbers: the answer's final probability and rank, the first layer at which the lens
        ranks it first, and the layer from which it stays first to the end."""
        ranks = self.answer_rank.tolist()
        first = next((self.layers[i] for i, r in enumerate(ranks) if r == 1), None)
        stable = None
        for i in range(len(ranks) - 1, -1, -1):
            if ranks[i] != 1:
                break
            stable = self.layers[i]
        return {
            "model": self.model_name,
            "prompt": self.prompt,
            "answer": self.answer,
            "answer_prob_final": float(self.answer_prob[-1]),
            "answer_rank_final": int(ranks[-1]),
            "first_layer_top1": first,
            "stable_top1_from_layer": stable,
            "top1_final": self.top_tokens[-1][-1][0],
            "n_layers": sum(1 for layer in self.layers if layer >= 0),
            "n_tokens": len(self.str_tokens),
        }

    def to_frame(self, which: str = "topk") -> pd.DataFrame:
        """A pandas DataFrame.

        ``which="topk"`` (long): one row per layer, position and rank k with the predicted token and
        its probability. ``"last"`` (wide): one row per layer at the last position — top-k tokens and
        probabilities, the answer's rank and probability, KL to the final distribution.
        ``"answer"``: one row per layer with the answer's rank, probability and the KL."""
        import pandas as pd

        if which == "topk":
            rows = []
            probs, ids = self.top_probs.tolist(), self.top_ids.tolist()
            for li, layer in enumerate(self.layers):
                for pos, tok in enumerate(self.str_tokens):
                    for k in range(self.top_k):
                        rows.append(
                            {
                                "layer": layer,
                                "position": pos,
                                "token": tok,
                                "k": k + 1,
                                "pred_token": self.top_tokens[li][pos][k],
                                "pred_id": ids[li][pos][k],
                                "prob": probs[li][pos][k],
                            }
                        )
            return pd.DataFrame(rows)
        if which == "last":
            rows = []
            probs = self.top_probs[:, -1].tolist()
            for li, layer in enumerate(self.layers):
                row: dict[str, Any] = {"layer": self.layer_labels[li]}
                for k in range(self.top_k):
                    row[f"top{k + 1}"] = self.top_tokens[li][-1][k]
                    row[f"p{k + 1}"] = probs[li][k]
                row["answer_rank"] = int(self.answer_rank[li])
                row["answer_prob"] = float(self.answer_prob[li])
                row["kl_to_final"] = float(self.kl_to_final[li])
                rows.append(row)
            return pd.DataFrame(rows)
        if which == "answer":
            return pd.DataFrame(
                {
                    "layer": self.layers,
                    "answer": self.answer,
                    "answer_rank": self.answer_rank.tolist(),
                    "answer_prob": self.answer_prob.tolist(),
                    "kl_to_final": self.kl_to_final.tolist(),
                }
            )
        raise ValueError(f"which must be 'topk', 'last' or 'answer', not {which!r}.")

    def plot(self, kind: str = "both") -> go.Figure:
        """Plotly figure. ``kind="heatmap"``: layers x positions coloured by the lens's top-1 probability,
        each cell labelled with its top-1 token; ``"answer"``: the answer's probability across layers at
        the last position; ``"both"`` (default): the two side by side, sharing the layer axis."""
        import html

        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        if kind not in ("both", "heatmap", "answer"):
            raise ValueError(f"kind must be 'both', 'heatmap' or 'answer', not {kind!r}.")

        # Plotly renders trace/axis text as a small subset of HTML; escaping shows tokens literally.
        def esc(s: str) -> str:
            return html.escape(display_token(s), quote=False)

        labels = self.layer_labels
        n_pos = len(self.str_tokens)
        top1 = self.top_probs[:, :, 0].tolist()
        text = [[esc(self.top_tokens[li][p][0]) for p in range(n_pos)] for li in range(len(self.layers))]
        inputs = [[esc(t) for t in self.str_tokens] for _ in self.layers]
        ticktext = [f"{p}: {esc(t)}" for p, t in enumerate(self.str_tokens)]
        answer = esc(self.answer)

        heat = go.Heatmap(
            z=top1,
            x=list(range(n_pos)),
            y=labels,
            text=text,
            customdata=inputs,
            texttemplate="%{text}",
            textfont={"size": 10},
            colorscale="Blues",
            zmin=0.0,
            zmax=1.0,
            colorbar={"title": {"text": "top-1 p"}, "len": 0.8},
            hovertemplate="layer %{y}<br>input %{x}: %{customdata}<br>top-1: %{text}<br>p = %{z:.3f}<extra></extra>",
        )
        line = go.Scatter(
            x=self.answer_prob.tolist(),
            y=labels,
            mode="lines+markers",
            name=f"p({answer})",
            customdata=self.answer_rank.tolist(),
            showlegend=False,
            hovertemplate="layer %{y}<br>p = %{x:.3f}<br>rank %{customdata}<extra></extra>",
        )
        height = max(320, 20 * len(self.layers) + 160)
        title = f"Logit lens — {esc(self.model_name)}" if self.model_name else "Logit lens"
        if kind == "heatmap":
            fig = go.Figure(heat)
            fig.update_xaxes(tickmode="array", tickvals=list(range(n_pos)), ticktext=ticktext, tickangle=-45)
        elif kind == "answer":
            fig = go.Figure(line)
            fig.update_xaxes(title_text=f"p({answer}) at last position", range=[0, 1])
        else:
            fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.78, 0.22], horizontal_spacing=0.02)
            fig.add_trace(heat, row=1, col=1)
            fig.add_trace(line, row=1, col=2)
            fig.update_xaxes(
                tickmode="array", tickvals=list(range(n_pos)), ticktext=ticktext, tickangle=-45, row=1, col=1
            )
            fig.update_xaxes(title_text=f"p({answer}), last pos", range=[0, 1], row=1, col=2)
        if kind == "both":
            fig.update_yaxes(title_text="layer (resid_post)", type="category", row=1, col=1)
        else:
            fig.update_yaxes(title_text="layer (resid_post)", type="category")
        fig.update_layout(title={"text": title}, height=height, margin={"l": 60, "r": 20, "t": 50, "b": 90})
        return fig


def _decode(model: Model, ids) -> list[str]:
    if model.tokenizer is None:
        return [f"#{int(i)}" for i in ids]
    return [model.tokenizer.decode([int(i)]) for i in ids]


def logit_lens(
    model: Model,
    prompt: str | torch.Tensor | list[int],
    answer: str | int | None = None,
    top_k: int = 5,
    include_embed: bool = False,
    prepend_bos: bool | None = None,
) -> LogitLensResult:
    """Logit lens (nostalgebraist 2020) over every layer of ``model`` on one prompt.

    ``prompt``: text, or token ids (1-D, or ``[1, pos]``) for models without a tokenizer.
    ``answer``: the token whose rank/probability is tracked at the last position — a string (its
    first token is used if it tokenizes into several; ``settings["answer_n_tokens"]`` records how
    many), a token id, or None for the model's own top prediction. ``include_embed`` adds a row
    for the embeddings (``blocks.0.hook_resid_pre``, layer ``-1``)."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    tokens, prompt_text = model.prompt_tokens(prompt, prepend_bos, caller="logit_lens")
    if tokens.shape[1] == 0:
        raise ValueError("The prompt is empty (no tokens).")
    n_layers = model.cfg.n_layers
    layers = ([-1] if include_embed else []) + list(range(n_layers))
    names = {layer: ("blocks.0.hook_resid_pre" if layer < 0 else f"blocks.{layer}.hook_resid_post") for layer in layers}
    top_k = min(top_k, model.cfg.d_vocab)

    with torch.no_grad():
        logits, cache = model.run(tokens, cache=list(names.values()))
        final_lp = logits[0, -1].float().log_softmax(-1)

        if answer is None:
            answer_id, n_answer_tokens = int(final_lp.argmax()), 1
        else:
            answer_id, n_answer_tokens = model.first_token_id(answer, "answer")

        # Unembed several layers per matmul: for short prompts reading W_U dominates, so batching layers
        # is much faster than one matmul per layer; chunks keep the [layers, pos, vocab] block <= ~256 MB.
        resid = torch.stack([cache[names[layer]][0] for layer in layers])  # [layers, pos, d]
        per_chunk = max(1, _CHUNK_ELEMENTS // max(1, tokens.shape[1] * model.cfg.d_vocab))
        top_ids, top_probs, ranks, aprobs, kls = [], [], [], [], []
        for start in range(0, len(layers), per_chunk):
            lg = unembed_resid(model, resid[start : start + per_chunk]).float()  # [c, pos, vocab]
            lp = lg.log_softmax(-1)
            v, i = lp.topk(top_k, dim=-1)
            top_ids.append(i.cpu())
            top_probs.append(v.exp().cpu())
            last, last_lp = lg[:, -1], lp[:, -1]  # [c, vocab]
            ranks += ((last > last[:, answer_id : answer_id + 1]).sum(-1) + 1).tolist()
            aprobs += last_lp[:, answer_id].exp().tolist()
            kls += (final_lp.exp() * (final_lp - last_lp)).sum(-1).clamp_min(0).tolist()
            del lg, lp

    top_ids_t = torch.cat(top_ids)
    vocab_str: dict[int, str] = {}
    for i in top_ids_t.unique().tolist():
        vocab_str[i] = _decode(model, [i])[0]
    top_tokens = [[[vocab_str[i] for i in row] for row in layer_ids] for layer_ids in top_ids_t.tolist()]
    ln = model.adapter.ln_final()
    return LogitLensResult(
        prompt=prompt_text,
        str_tokens=_decode(model, tokens[0].tolist()),
        layers=layers,
        top_tokens=top_tokens,
        top_ids=top_ids_t,
        top_probs=torch.cat(top_probs),
        answer=_decode(model, [answer_id])[0],
        answer_id=answer_id,
        answer_rank=torch.tensor(ranks, dtype=torch.long),
        answer_prob=torch.tensor(aprobs),
        kl_to_final=torch.tensor(kls),
        model_name=model.name,
        settings={
            "method": "logit lens (nostalgebraist 2020)",
            "hook": "blocks.{L}.hook_resid_post",
            "final_norm": type(ln).__name__,
            "final_logit_softcapping": getattr(getattr(model.hf, "config", None), "final_logit_softcapping", None),
            "top_k": top_k,
            "include_embed": include_embed,
            "prepend_bos": prepend_bos,
            "answer_given": answer is not None,
            "answer_input": answer if isinstance(answer, str) or answer is None else answer_id,
            "answer_n_tokens": n_answer_tokens,
            "n_layers": n_layers,
        },
    )
