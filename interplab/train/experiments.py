"""Registry of training-lab experiments for ``interplab train EXPERIMENT``.

Each entry: the config dataclass, ``run(cfg, run_dir, resume, progress) -> result`` (trains or resumes,
analyses, saves its Result and the model in ``run_dir``), ``report(result, path)`` and the headline keys
``--json`` prints. The config is saved as ``config.json`` in the run directory; ``--resume`` reads it back."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from interplab.train.config import build_config, config_dict

CONFIG_FILE = "train_config.json"
RESUME_OVERRIDABLE = {
    "epochs",
    "steps",
    "threads",
    "log_every",
    "ckpt_every",
    "snapshot_every",
    "keep_snapshots",
    "parts",
    "stop_when_clean",
}


@dataclass(frozen=True)
class Experiment:
    name: str
    module: str
    config: str
    description: str

    def mod(self):
        return importlib.import_module(self.module)

    def config_cls(self):
        return getattr(self.mod(), self.config)


EXPERIMENTS: dict[str, Experiment] = {
    "grokking": Experiment(
        "grokking",
        "interplab.train.grokking",
        "GrokkingConfig",
        "modular arithmetic, Nanda et al. 2023 defaults (p=113, 1 layer, 30% train)",
    ),
    "superposition": Experiment(
        "superposition",
        "interplab.train.superposition",
        "SuperpositionConfig",
        "toy models of superposition, Elhage et al. 2022 (intro sweep, geometry, phase diagram)",
    ),
    "addition": Experiment(
        "addition",
        "interplab.train.addition",
        "AdditionConfig",
        "n-digit addition with per-digit loss curves and phase changes (Nanda et al. 2023)",
    ),
    "attn-only": Experiment(
        "attn-only",
        "interplab.train.induction_formation",
        "AttnOnlyConfig",
        "attention-only transformers and induction heads, Olsson et al. 2022",
    ),
}


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}.")
    return EXPERIMENTS[name]


def make_config(name: str, file=None, sets=None, resume_dir=None, extra: dict | None = None):
    exp = get(name)
    cls = exp.config_cls()
    base = None
    if resume_dir is not None:
        p = Path(resume_dir) / CONFIG_FILE
        if not p.exists():
            raise FileNotFoundError(
                f"{resume_dir} has no {CONFIG_FILE}; it is not a training run directory of this version."
            )
        saved = json.loads(p.read_text())
        if saved.get("experiment") != name:
            raise ValueError(f"{resume_dir} is a {saved.get('experiment')!r} run, not {name!r}.")
        base = saved["config"]
        bad = [s.split("=", 1)[0] for s in sets or [] if s.split("=", 1)[0] not in RESUME_OVERRIDABLE]
        if bad or file is not None:
            raise ValueError(
                f"--resume continues the saved config; only {sorted(RESUME_OVERRIDABLE)} may be changed with --set "
                f"(got {bad or '--config'})."
            )
    cfg = build_config(cls, file=file, sets=sets, base={**(base or {}), **(extra or {})})
    return cfg


def save_config(name: str, cfg, run_dir) -> None:
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / CONFIG_FILE).write_text(json.dumps({"experiment": name, "config": config_dict(cfg)}, indent=2))


def run(name: str, cfg, run_dir, resume: bool = False, progress: bool = True):
    """Train/resume + analyse + write ``report.html``; returns the Result (with ``.headline``)."""
    mod = get(name).mod()
    save_config(name, cfg, run_dir)
    res = mod.train(cfg, run_dir, resume=resume, progress=progress)
    mod.report(res, Path(run_dir) / "report.html")
    return res
