"""The ``interplab sae train`` experiment: train an SAE on model activations or a synthetic set, score it
(:mod:`.metrics`), run the controls (:mod:`.controls`), gather the feature browser's contexts (:mod:`.browser`),
and keep it all in an :class:`SAEResult`. The HTML report of a result is :mod:`interplab.report.sections.sae`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.analyses.sae.browser import top_contexts
from interplab.analyses.sae.controls import control_entry, fit_and_score, run_synthetic_controls
from interplab.analyses.sae.data import SYNTHETIC, SyntheticName, TensorData, make_synthetic
from interplab.analyses.sae.metrics import ce_score
from interplab.analyses.sae.model import SAE, SAEConfig
from interplab.io.activations import ActivationDataset
from interplab.io.results import Result

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["SAEData", "SAEResult", "run_sae"]

SAEData = Literal["acts"] | SyntheticName
"""What ``interplab sae train --data`` trains on: an activation directory or a synthetic set."""


# what the headline keeps of each control, in this order
_CONTROL_HEADLINE = ("test_explained_variance", "l0", "pca_topk_ev", "pca_top_ev", "ev_gap_vs_pca_topk")
_CONTROL_HEADLINE += ("ev_gap_se", "test_dead_frac", "recovery", "ce_score")


@dataclass
class SAEResult(Result):
    """An SAE run: metrics on training and held-out rows (``main``, from
    :func:`~interplab.analyses.sae.controls.fit_and_score`), the CE score (``ce``: ``train`` / ``test``), the
    controls and the feature browser's contexts (``browser``: feature -> top contexts)."""

    KIND: ClassVar[str] = "sae_result"
    FILE: ClassVar[str] = "sae_result.json"

    settings: dict
    main: dict
    ce: dict | None = None
    controls: dict = field(default_factory=dict)
    browser: dict | None = None

    def headline(self) -> dict[str, Any]:
        m = self.main
        h = {
            "l0": m["train"]["l0"],
            "test_l0": m["test"]["l0"],
            "explained_variance": m["train"]["explained_variance"],
            "test_explained_variance": m["test"]["explained_variance"],
            "mse": m["train"]["mse"],
            "test_mse": m["test"]["mse"],
            "dead_frac": m["train"]["dead_frac"],
            "test_dead_frac": m["test"]["dead_frac"],
            "pca_top_ev": m["pca_top_ev"],
            "pca_topk_ev": m["pca_topk_ev"],
            "pca_m": m["pca_m"],
            "tokens_per_s": m["tokens_per_s"],
        }
        if self.ce:
            h.update(
                {
                    "ce_score": self.ce["train"]["ce_score"],
                    "test_ce_score": self.ce["test"]["ce_score"],
                    "ce_clean": self.ce["test"]["ce_clean"],
                    "ce_sae": self.ce["test"]["ce_sae"],
                    "ce_zero_ablation": self.ce["test"]["ce_zero_ablation"],
                    "ce_baseline": "zero ablation",
                }
            )
        if "recovery" in m:
            h.update({"recovery": m["recovery"], "mmcs": m["mmcs"]})
        if self.controls:
            h["controls"] = {k: {kk: v[kk] for kk in _CONTROL_HEADLINE if kk in v} for k, v in self.controls.items()}
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()}

    def to_frame(self):
        import pandas as pd

        rows = [{"data": "main", "split": s, **{k: v for k, v in self.main[s].items()}} for s in ("train", "test")]
        for name, c in self.controls.items():
            rows.append(
                {
                    "data": name,
                    "split": "test",
                    "l0": c.get("l0"),
                    "explained_variance": c.get("test_explained_variance"),
                    "dead_frac": c.get("test_dead_frac"),
                    "pca_topk_ev": c.get("pca_topk_ev"),
                    "pca_top_ev": c.get("pca_top_ev"),
                    "recovery": c.get("recovery"),
                }
            )
        return pd.DataFrame(rows)

    def plot(self):
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=1, cols=2, subplot_titles=("training (batch EV, L0)", "held-out EV: SAE vs PCA at equal L0")
        )
        hist = self.main["history"]
        fig.add_trace(go.Scatter(x=[h["step"] for h in hist], y=[h["ev"] for h in hist], name="batch EV"), 1, 1)
        names = ["main"] + list(self.controls)
        sae_ev = [self.main["test"]["explained_variance"]] + [
            self.controls[n].get("test_explained_variance") for n in self.controls
        ]
        pca_ev = [self.main["pca_topk_ev"]] + [self.controls[n].get("pca_topk_ev") for n in self.controls]
        fig.add_trace(go.Bar(x=names, y=sae_ev, name="SAE"), 1, 2)
        fig.add_trace(go.Bar(x=names, y=pca_ev, name="PCA top-L0 coefficients"), 1, 2)
        fig.update_layout(barmode="group", height=420)
        return fig

    def _encode(self, name: str, value: Any) -> Any:
        """The per-feature densities and training histories of the controls stay out of the JSON file."""
        if name == "main":
            value = {k: v for k, v in value.items() if k != "density_test"}
        elif name == "controls":
            value = {
                k: {kk: vv for kk, vv in v.items() if kk not in ("history", "density_test")} for k, v in value.items()
            }
        return super()._encode(name, value)

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "browser":  # JSON keys are strings; features are ints
            return {int(k): v for k, v in (value or {}).items()} or None
        return value


def run_sae(
    data: SAEData,
    *,
    model: Model | None = None,
    acts_dir: str | Path | None = None,
    cfg: SAEConfig | None = None,
    run_dir: str | Path,
    test_frac: float = 0.1,
    n_train: int = 65536,
    n_test: int = 16384,
    controls: bool = True,
    ce_seqs: int = 16,
    control_rows: int = 32768,
    browser_features: int = 16,
    log: Callable[[str], None] | None = None,
    **cfg_kw: Any,
) -> tuple[SAE, SAEResult]:
    """The ``interplab sae train`` experiment.

    ``data``: ``"acts"`` (the activation directory ``acts_dir``; a model enables the CE score and the layer-0
    control) or a synthetic set (:data:`SYNTHETIC`). Controls (``controls=True``): every synthetic set, and for
    model activations also layer-0 (``hook_embed``) activations of the same tokens and a frozen random decoder.
    Writes ``sae.safetensors``, ``sae_result.json`` and ``checkpoint/`` into ``run_dir``; the caller builds the
    report (:func:`interplab.report.sections.sae.add_sae_sections`).

    Args:
        data: ``"acts"`` or a synthetic set name.
        model: the model the activations come from (enables the CE score, the layer-0 control and decoded
            contexts in the browser).
        acts_dir: the activation directory (``interplab acts``) when ``data == "acts"``.
        cfg: the SAE (None: ``SAEConfig(d_in=<data dimension>, **cfg_kw)``).
        run_dir: where the SAE, its checkpoint and the result are written.
        test_frac: held-out fraction of the activation rows (split by shard when there are several).
        n_train, n_test: rows of a synthetic set's splits.
        controls: also train the controls.
        ce_seqs: sequences per split for the CE score.
        control_rows: training rows of each synthetic control.
        browser_features: live features shown in the browser (chosen at random with the SAE's seed).
        log: called with progress lines.
        **cfg_kw: :class:`SAEConfig` fields when ``cfg`` is None.
    """
    log = log or (lambda s: None)
    run_dir = Path(run_dir)
    atoms = None
    if data == "acts":
        if acts_dir is None:
            raise ValueError("data='acts' needs the activation directory acts_dir.")
        ds = ActivationDataset(acts_dir)
        train, test = ds.split(test_frac, by="auto")
        d = ds.d
        desc = {
            "data": f"activations {acts_dir}",
            "hook": ds.hook,
            "model": ds.model_name,
            "rows": len(ds),
            "train_rows": len(train),
            "test_rows": len(test),
        }
    elif data in SYNTHETIC:
        sd = make_synthetic(data, n_train=n_train, n_test=n_test, seed=(cfg.seed if cfg else cfg_kw.get("seed", 0)))
        train, test, atoms, d = TensorData(sd["train"]), TensorData(sd["test"]), sd["atoms"], sd["d"]
        ds = None
        desc = {"data": data, "hook": None, "model": None, "train_rows": n_train, "test_rows": n_test}
    else:
        raise ValueError(f"--data must be 'acts DIR' or one of {', '.join(SYNTHETIC)}, not {data!r}.")
    if cfg is None:
        cfg = SAEConfig(d_in=d, **cfg_kw)
    elif cfg.d_in != d:
        raise ValueError(f"the SAE config has d_in={cfg.d_in} but the data has d={d}.")
    settings = {**asdict(cfg), **desc, "test_frac": test_frac}
    log(f"training {cfg.kind} SAE ({cfg.n_features} features) on {len(train)} rows …")
    sae, main = fit_and_score(
        train,
        test,
        cfg,
        atoms=atoms,
        checkpoint_dir=run_dir / "checkpoint",
        progress=lambda s, n, lg: log(
            f"step {s}/{n}: batch EV {lg.get('ev', float('nan')):.3f}, L0 {lg.get('l0', 0):.1f}"
        ),
    )
    sae.save(run_dir)
    res = SAEResult(settings, main)
    skip_first = bool(ds.manifest["settings"].get("skipped_first")) if ds is not None else False
    can_ce = model is not None and ds is not None and ds.manifest["settings"].get("positions") == "all"
    if can_ce:
        assert model is not None and ds is not None
        assert isinstance(train, ActivationDataset) and isinstance(test, ActivationDataset)
        log("CE score (clean / SAE spliced / zero-ablated) …")
        res.ce = {}
        train_seqs = train.sequences()
        test_seqs = test.sequences()
        unseen = test_seqs[~torch.isin(test_seqs, train_seqs)]  # a sequence cut by the split counts as training text
        res.settings["ce_test_unseen_text"] = (
            len(unseen) > 0
        )  # False: split by row, test rows share sequences with training
        test_seqs = unseen if len(unseen) else test_seqs
        for split, seqs in (("train", train_seqs[:ce_seqs]), ("test", test_seqs[:ce_seqs])):
            res.ce[split] = ce_score(model, sae, ds.hook, ds.tokens[seqs], skip_first=skip_first) | {
                "n_seqs": len(seqs)
            }
    if controls:
        res.controls.update(
            run_synthetic_controls(cfg, n_train=control_rows, n_test=max(256, control_rows // 4), log=log)
        )
        if ds is not None:
            log("control: frozen random decoder …")
            rc = SAEConfig(**{**asdict(cfg), "freeze_decoder": True, "resample_at": cfg.resample_at})
            rsae, rsc = fit_and_score(train, test, rc)
            res.controls["random-decoder"] = control_entry(rsc)
            if res.ce:
                assert model is not None
                res.controls["random-decoder"]["ce_score"] = ce_score(
                    model, rsae, ds.hook, ds.tokens[test_seqs[:ce_seqs]], skip_first=skip_first, baseline=res.ce["test"]
                )["ce_score"]
            if model is not None and ds.hook != "hook_embed":
                from interplab.io.activations import extract_activations

                log("control: layer-0 (hook_embed) activations of the same tokens …")
                s = ds.manifest["settings"]
                l0dir = run_dir / "acts_layer0"
                ds0 = extract_activations(
                    model,
                    "hook_embed",
                    l0dir,
                    tokens=ds.tokens,
                    positions=s["positions"],
                    skip_first=s["skip_first"],
                    shard_rows=ds.manifest["shard_rows"],
                    batch=s["batch"],
                )
                tr0, te0 = ds0.split(test_frac, by="auto")
                lc = SAEConfig(**{**asdict(cfg), "d_in": ds0.d})
                _, l0sc = fit_and_score(tr0, te0, lc)
                res.controls["layer0-embed"] = control_entry(l0sc)
    if ds is not None and browser_features > 0:
        dens = main["density_test"]
        alive = (dens > 0).nonzero().flatten()
        g = torch.Generator().manual_seed(cfg.seed)
        pick = alive[torch.randperm(len(alive), generator=g)[:browser_features]].sort().values.tolist()
        tok = getattr(model, "tokenizer", None) if model is not None else None
        assert isinstance(test, ActivationDataset)
        res.browser = top_contexts(sae, test, pick, tokenizer=tok)
        res.settings["browser_density"] = {int(f): float(dens[f]) for f in pick}
    res.save(run_dir)
    return sae, res
