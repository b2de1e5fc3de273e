"""The IOI procedure of Wang et al. (2022), "Interpretability in the Wild: a Circuit for Indirect Object
Identification in GPT-2 small", on any supported model.

:func:`ioi_circuit` measures the logit difference logit(IO) − logit(S) and the fraction of prompts preferring
IO, then classifies heads: name movers (direct logit attribution with END→IO attention), negative name
movers, S-inhibition heads (earlier heads attending END→S2, confirmed by path patching into the name movers'
queries), induction, duplicate-token and previous-token heads (the detectors of
:mod:`interplab.analyses.observational.heads`), and finds the circuit with
:func:`~interplab.analyses.causal.circuits.discover_circuit` and its faithfulness.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import torch

from interplab.analyses.causal.circuits import CircuitResult, discover_circuit
from interplab.analyses.causal.patching import PatchingResult, activation_patching
from interplab.analyses.causal.path_patching import path_patching
from interplab.io.results import Result
from interplab.tasks.pairs import PromptPairs

if TYPE_CHECKING:
    from interplab.analyses.observational.heads import HeadScores
    from interplab.models.model import Model

__all__ = ["IOIResult", "ioi_circuit"]


@dataclass
class IOIResult(Result):
    """The IOI procedure's result: the clean and corrupt logit differences ``[n]``, the head classes, the
    circuit (or None), the head-patching grid at END, each head's direct logit attribution ``[L, H]`` and
    END→IO/S1/S2 attention ``[L, H]``.

    Saved as ``ioi.json`` (+ ``ioi.safetensors``), with the circuit as ``circuit.json`` and the patching grid
    as ``patching_heads_end.json`` in the same directory."""

    KIND: ClassVar[str] = "ioi"
    FILE: ClassVar[str] = "ioi.json"
    PATCHING_FILE: ClassVar[str] = "patching_heads_end.json"

    logit_diff: torch.Tensor  # [n] clean
    corrupt_logit_diff: torch.Tensor
    classes: dict[str, list[list[int]]]
    circuit: CircuitResult | None
    patching: PatchingResult | None = None  # heads at END
    dla: torch.Tensor | None = None  # [L, H] mean direct effect on the logit difference
    attention: dict[str, torch.Tensor] = field(default_factory=dict)  # END -> IO / S1 / S2 [L, H]
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        ld = self.logit_diff
        h = {
            "model": self.model_name,
            "n": int(ld.numel()),
            "logit_diff_mean": round(float(ld.mean()), 4),
            "logit_diff_std": round(float(ld.std()), 4) if ld.numel() > 1 else 0.0,
            "io_preferred_frac": round(float((ld > 0).float().mean()), 4),
            "corrupt_logit_diff_mean": round(float(self.corrupt_logit_diff.mean()), 4),
            "heads": self.classes,
        }
        if self.circuit is not None:
            h["circuit"] = {
                "heads": self.circuit.heads,
                "mlps": self.circuit.mlps,
                "faithfulness": round(self.circuit.faithfulness, 4),
                "n_nodes": len(self.circuit.nodes),
            }
        return h

    def _encode(self, name: str, value: Any) -> Any:
        if name in ("circuit", "patching"):  # saved beside ioi.json as results of their own
            return value is not None
        return super()._encode(name, value)

    def save(self, directory: str | Path) -> Path:
        """Write ``ioi.json`` (+ ``ioi.safetensors``), ``circuit.json`` and ``patching_heads_end.json`` into
        ``directory``; returns the path of ``ioi.json``."""
        d = Path(directory)
        if self.circuit is not None:
            self.circuit.save(d)
        if self.patching is not None:
            self.patching.save(d, self.PATCHING_FILE)
        return super().save(d)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a result written by :meth:`save` (its directory or its ``ioi.json``), circuit and grid included."""
        r = super().load(path)
        d = Path(path) if Path(path).is_dir() else Path(path).parent
        r.circuit = CircuitResult.load(d) if r.circuit else None
        r.patching = PatchingResult.load(d / cls.PATCHING_FILE) if r.patching else None
        return r


def _ioi_attention_and_dla(model: Model, pairs: PromptPairs) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """END→IO/S1/S2 attention per head, and each head's direct logit attribution on logit(IO) − logit(S)
    (:func:`~interplab.analyses.observational.dla.direct_logit_attribution`, final norm frozen — Wang et al.'s
    name-mover criterion), both averaged over prompts."""
    from interplab.analyses.observational.dla import direct_logit_attribution

    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    n = len(pairs)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(L)]
    att = {k: torch.zeros(L, H) for k in ("IO", "S1", "S2")}
    rows = torch.arange(n)
    end = pairs.positions["END"]
    with torch.no_grad():
        _, cache = model.run(pairs.clean, cache=names, attention_mask=pairs.run_mask())
        for layer in range(L):
            pat = cache[f"blocks.{layer}.attn.hook_pattern"][rows, :, end]  # [n, H, k]
            for k, a in att.items():
                a[layer] = pat[rows, :, pairs.positions[k]].mean(0)
    del cache
    dla = torch.zeros(L, H)
    for i in range(n):
        length = int(pairs.mask[i].sum())
        r = direct_logit_attribution(model, pairs.clean[i, :length], int(pairs.answer_ids[i]), int(pairs.wrong_ids[i]))
        dla += r.heads / n
    return att, dla


def ioi_circuit(
    model: Model,
    pairs: PromptPairs,
    threshold: float = 0.02,
    n_name_movers: int = 5,
    detector_seqs: int = 16,
    circuit: bool = True,
    mlps: bool = True,
    head_scores_result: HeadScores | None = None,
) -> IOIResult:
    """The IOI procedure of Wang et al. (2022) on ``model`` (see the module docstring).

    Args:
        model: the model.
        pairs: IOI prompt pairs with IO/S1/S2/END positions (:func:`interplab.tasks.ioi.ioi`; p_ABC corruption).
        threshold: the circuit-pruning threshold of :func:`~interplab.analyses.causal.circuits.discover_circuit`.
        n_name_movers: how many name movers to keep (top direct logit attribution with END→IO attention).
        detector_seqs: sequences for the induction / duplicate-token / previous-token detectors.
        circuit: also discover the circuit and its faithfulness.
        mlps: include MLP layers as circuit nodes.
        head_scores_result: head-detector scores already computed
            (:func:`interplab.analyses.observational.heads.head_scores`); None computes them.
    """
    from interplab.analyses.observational.heads import head_scores

    t0 = time.perf_counter()
    if "IO" not in pairs.positions or "S2" not in pairs.positions:
        raise ValueError("ioi_circuit needs IOI pairs with IO/S1/S2/END positions (interplab.tasks.ioi.ioi).")
    att, dla = _ioi_attention_and_dla(model, pairs)
    H = model.cfg.n_heads
    flat = dla.reshape(-1)
    io_pref = (att["IO"] > att["S1"] + att["S2"]).reshape(-1)
    nm = [i for i in flat.argsort(descending=True).tolist() if flat[i] > 0 and io_pref[i]][:n_name_movers]
    neg = [i for i in flat.argsort().tolist() if flat[i] < 0 and io_pref[i]][: max(1, n_name_movers // 2)]
    name_movers = [[i // H, i % H] for i in nm]
    negative = [[i // H, i % H] for i in neg if flat[i] < -0.1 * float(flat[nm[0]] if nm else 1)]
    # S-inhibition: heads before the first name mover, attending END->S2, that matter at END (denoising),
    # confirmed by path patching into the name movers' queries.
    patch = activation_patching(model, pairs, grid="heads", position="END", n_boot=200)
    ld, ldx = patch.clean_metric, patch.corrupt_metric  # the clean / corrupt logit differences [n]
    first_nm = min((a for a, _ in name_movers), default=model.cfg.n_layers)
    cand = [(layer, h) for layer in range(first_nm) for h in range(H) if att["S2"][layer, h] > att["IO"][layer, h]]
    cand = sorted(cand, key=lambda x: -abs(float(patch.values[x[0], x[1]])))[:8]
    s_inhib: list[list[int]] = []
    if cand and name_movers:
        pp = path_patching(
            model,
            pairs,
            senders=cand,
            receivers=[tuple(x) for x in name_movers],
            receiver_input="q",
            receiver_position="END",
        )
        eff = (1 - pp.values).sum(-1)  # summed effect over the name movers
        s_inhib = [[a, b] for (a, b), e in zip(cand, eff.tolist()) if e > 0.05]
    hs = head_scores_result or head_scores(model, n_seqs=detector_seqs, copying=False)
    # strong direct effect without attending to IO (e.g. a head that attends to S2 and suppresses S)
    floor = float(flat[nm[-1]]) if nm else 0.0
    other = [
        [i // H, i % H]
        for i in flat.argsort(descending=True).tolist()[: 3 * n_name_movers]
        if flat[i] > max(floor, 0.0) and not io_pref[i]
    ]
    classes = {
        "name_movers": name_movers,
        "negative_name_movers": negative,
        "s_inhibition": s_inhib,
        "direct_not_io": other,
    }
    for c in ("induction", "duplicate_token", "previous_token"):
        classes[c] = [[a, b] for a, b, _ in hs.members(c)] if c in hs.scores else []
    circ = discover_circuit(model, pairs, threshold=threshold, mlps=mlps) if circuit else None
    return IOIResult(
        logit_diff=ld,
        corrupt_logit_diff=ldx,
        classes=classes,
        circuit=circ,
        patching=patch,
        dla=dla,
        attention=att,
        model_name=model.name,
        settings={
            "threshold": threshold,
            "n": len(pairs),
            "seconds": round(time.perf_counter() - t0, 3),
            "name_mover_rule": "top positive direct logit attribution with END->IO attention > END->S1 + END->S2",
            "direct_not_io_rule": (
                "direct logit attribution above the weakest name mover, END->IO attention not dominant"
            ),
            "s_inhibition_rule": (
                "earlier head attending END->S2 more than IO, path-patching effect > 0.05 via name movers' queries"
            ),
        },
    )
