"""Where the cache-all overhead goes: minor page faults, CPU time and wall time per forward, plain vs cached,
beside a plain forward that also allocates (and writes) the bytes the cache keeps, and that allocation alone.

Usage (from the repository root): ``.venv/bin/python bench/cache_memory.py [ROUNDS] [THREADS]`` (default 15
rounds, 1 thread); JSON on stdout. Run it again under glibc tunables that keep freed memory in the process
(``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824``) to
see what fresh pages cost."""

import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import interplab
from interplab.bench.protocol import interleave
from interplab.runtime import torch_threads

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
m = interplab.load("smollm2-135m")
g = torch.Generator().manual_seed(0)
tokens = torch.randint(0, m.cfg.d_vocab, (8, 128), generator=g)
_, c = m.run(tokens, cache=lambda n: not n.endswith("hook_pattern"))
groups = m.cfg.n_heads // m.cfg.n_kv_heads
shapes = []  # what the cache stores: k/v per KV head (expanded when read), hook_result derived on read
for name in c:
    if name.endswith("hook_result"):
        continue
    x = c[name]
    shape = list(x.shape)
    if name.endswith(("attn.hook_k", "attn.hook_v")):
        shape[2] //= groups
    shapes.append((torch.Size(shape), x.dtype))
lazy = [n for n in c if n.endswith(("hook_result", "attn.hook_k", "attn.hook_v"))]
del c
n_bytes = sum(s.numel() * 4 for s, _ in shapes)

faults: dict[str, list[int]] = {}
cpu: dict[str, list[float]] = {}


def with_faults(name, fn):
    def run():
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        c0 = time.process_time()
        out = fn()
        cpu.setdefault(name, []).append(time.process_time() - c0)
        faults.setdefault(name, []).append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        return out

    return run


def plain():
    with torch.no_grad():
        return m.hf(input_ids=tokens, use_cache=False).logits


def plain_alloc():
    with torch.no_grad():
        out = m.hf(input_ids=tokens, use_cache=False).logits
        keep = [torch.ones(s, dtype=d) for s, d in shapes]
    return out, keep


def alloc_only():
    return [torch.ones(s, dtype=d) for s, d in shapes]


variants = {
    "plain": with_faults("plain", plain),
    "cache_resid": with_faults("cache_resid", lambda: m.run(tokens, cache=lambda n: ".hook_resid_" in n)),
    "cache_all": with_faults("cache_all", lambda: m.run(tokens, cache=lambda n: not n.endswith("hook_pattern"))),
    "plain_plus_alloc": with_faults("plain_plus_alloc", plain_alloc),
    "alloc_only": with_faults("alloc_only", alloc_only),
}
with torch_threads(threads):
    t = interleave(variants, rounds=rounds, warmup=1)
out = {
    "threads": threads,
    "stored_tensors": len(shapes),
    "lazy": len(lazy),
    "stored_mb": round(n_bytes / 2**20, 1),
    **t.protocol(),
}
for v in variants:
    out.update(t.times(v))
    if v != "plain":
        out.update(t.compare(f"ratio_{v}", v, "plain"))
    out[f"minflt_{v}_median"] = sorted(faults[v])[len(faults[v]) // 2]
    out[f"cpu_s_{v}_min"] = round(min(cpu[v]), 3)
    if v != "plain":
        out[f"cpu_ratio_{v}_min"] = round(min(cpu[v]) / min(cpu["plain"]), 3)
print(json.dumps({k: v for k, v in out.items() if not k.endswith("_rounds")}, indent=1))
