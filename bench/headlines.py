"""Run a fixed list of interplab commands and record their ``--json`` headlines, to check that a refactor
changes no result.

    python bench/headlines.py record OUT.json [--src DIR] [--only a,b]   # run them (DIR's interplab first on the path)
    python bench/headlines.py compare A.json B.json      # exit 1 and list the differences if they differ

Keys that measure time or name paths (``*time*``, ``*second*``, ``wall*``, ``*_s``, ``run_dir``, ``out``,
``path``, ``*file*``) are dropped before comparing; everything else must be identical.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS: dict[str, list[str]] = {
    "report": ["report", "--model", "smollm2-135m", "--json"],
    "heads": ["heads", "--model", "smollm2-135m", "--json"],
    "ioi": ["ioi", "--model", "smollm2-135m", "--n", "8", "--json"],
    "patch-ioi": ["patch", "ioi", "--model", "smollm2-135m", "--json"],
    "trace-eiffel": [
        "trace",
        "--model",
        "smollm2-135m",
        "--prompt",
        "The Eiffel Tower is located in the city of",
        "--subject",
        "Eiffel Tower",
        "--answer",
        " Paris",
        "--json",
    ],
    "train-grokking": ["train", "grokking", "--set", "epochs=600", "--json"],
    "ccs": ["ccs", "--model", "smollm2-135m", "--n", "40", "--json"],
    "erase": ["erase", "--data", "synthetic", "--json"],
    "sae-known-dict": ["sae", "train", "--data", "known-dict", "--json"],
}
VOLATILE = ("time", "second", "wall", "run_dir", "path", "file", "version", "revision", "elapsed")


def _clean(x):
    if isinstance(x, dict):
        return {
            k: _clean(v)
            for k, v in x.items()
            if not (any(w in k.lower() for w in VOLATILE) or k.endswith("_s") or k in ("out", "dir"))
        }
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def record(out: Path, src: Path | None, only: list[str] | None = None) -> None:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    results: dict[str, object] = json.loads(out.read_text()) if out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in COMMANDS.items():
            if only and name not in only:
                continue
            t = time.perf_counter()
            cmd = [sys.executable, "-c", "from interplab.cli import main; main()", *args, "--out", f"{tmp}/{name}"]
            p = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=tmp)
            if p.returncode != 0:
                results[name] = {"error": p.returncode, "stderr": p.stderr[-2000:]}
            else:
                results[name] = _clean(json.loads(p.stdout))
            print(f"{name}: rc {p.returncode}, {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            out.write_text(json.dumps(results, indent=1, sort_keys=True))


def _tmp(x):
    """Temporary-directory prefixes replaced, so paths inside the run directories compare equal."""
    if isinstance(x, str):
        return re.sub(r"/tmp/tmp[\w]+", "<tmp>", x)
    if isinstance(x, dict):
        return {k: _tmp(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_tmp(v) for v in x]
    return x


def _diff(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'B' if k not in a else 'A'}")
            else:
                out += _diff(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "record":
        src = Path(argv[argv.index("--src") + 1]) if "--src" in argv else None
        only = argv[argv.index("--only") + 1].split(",") if "--only" in argv else None
        record(Path(argv[1]), src, only)
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        a, b = (_tmp(_clean(json.loads(Path(p).read_text()))) for p in argv[1:])
        diffs = _diff(a, b)
        print("\n".join(diffs) if diffs else f"identical: {len(a)} commands")
        return 1 if diffs else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
