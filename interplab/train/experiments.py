"""Registry of training-lab experiments for ``interplab train EXPERIMENT``.

One name per experiment: the CLI name is the module's name (``attn-only`` is :mod:`interplab.train.attn_only`)
and the config class is ``<Name>Config``. Each module has ``train(cfg, run_dir, resume, progress) -> Result``
(trains or resumes, analyses, saves its Result and the model in ``run_dir``); the Result's ``headline()`` is
what ``--json`` prints. The config is saved as ``train_config.json`` (:data:`CONFIG_FILE`) in the run
directory, and ``--resume`` reads it back.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from interplab.io.atomic import write_json
from interplab.io.results import Result
from interplab.train.config import build_config, config_dict

ExperimentName = Literal["grokking", "superposition", "addition", "attn-only", "double-descent", "scaling"]

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

    def mod(self) -> Any:
        return importlib.import_module(self.module)

    def config_cls(self) -> type:
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
        "interplab.train.attn_only",
        "AttnOnlyConfig",
        "attention-only transformers and induction heads, Olsson et al. 2022",
    ),
    "double-descent": Experiment(
        "double-descent",
        "interplab.train.double_descent",
        "DoubleDescentConfig",
        "model-wise and epoch-wise double descent on the digits with label noise, Nakkiran et al. 2019",
    ),
    "scaling": Experiment(
        "scaling",
        "interplab.train.scaling",
        "ScalingConfig",
        "compute-optimal scaling law L(N, D) on toy byte-level transformers, Hoffmann et al. 2022",
    ),
}


def get(name: str) -> Experiment:
    """The experiment called ``name`` (one of :data:`ExperimentName`); a ValueError naming the others if unknown."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}.")
    return EXPERIMENTS[name]


def make_config(
    name: str,
    file: str | Path | None = None,
    sets: list[str] | None = None,
    resume_dir: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Any:
    """The config of experiment ``name``: its defaults <- the saved config of ``resume_dir`` (when resuming;
    only :data:`RESUME_OVERRIDABLE` keys may then change) <- ``extra`` <- the TOML ``file`` <- ``sets``
    (``key=value`` strings)."""
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


def save_config(name: str, cfg: Any, run_dir: str | Path) -> None:
    """Write ``run_dir/train_config.json``: the experiment's name and its config."""
    write_json(Path(run_dir) / CONFIG_FILE, {"experiment": name, "config": config_dict(cfg)}, indent=2)


def run(name: str, cfg: Any, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Result:
    """Train (or resume) experiment ``name`` with ``cfg`` in ``run_dir`` and analyse it; returns its Result (the
    CLI writes the report with :func:`interplab.report.sections.training.training_report`)."""
    mod = get(name).mod()
    save_config(name, cfg, run_dir)
    return mod.train(cfg, run_dir, resume=resume, progress=progress)
