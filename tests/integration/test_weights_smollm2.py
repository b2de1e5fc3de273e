"""Integration tests on the real SmolLM2-135M (marked ``integration``) and the browser."""

from __future__ import annotations

import time

import pytest

from interplab.analyses.weights import (
    composition_scores,
    head_circuits,
)


@pytest.mark.integration
def test_smollm2_composition_and_copying(smollm2):
    t0 = time.perf_counter()
    comp = composition_scores(smollm2)
    t_comp = time.perf_counter() - t0
    c = smollm2.cfg
    assert comp.scores["K"].shape == (c.n_layers, c.n_heads, c.n_layers, c.n_heads)
    assert comp.baseline_mean["K"] == pytest.approx(c.d_model**-0.5, rel=0.05)
    top = comp.top_pairs("K", 10)
    assert top[0][5] > 50  # the strongest K-composition stands far above chance
    t0 = time.perf_counter()
    circ = head_circuits(smollm2, n_directions=1, top_k=5)
    t_circ = time.perf_counter() - t0
    assert (
        circ.copying.shape == (c.n_layers, c.n_heads)
        and 0 <= float(circ.copying.min()) <= float(circ.copying.max()) <= 1
    )
    # the copying score does not saturate: few members, and the top heads differ in score (Elhage et al.'s
    # eigenvalue ratio puts 111 of the 270 heads above 0.5 and its top twelve at >= 0.99)
    assert len(circ.members("copying")) < 30 and len(circ.members("copy_suppression")) < 30
    print(f"\ncomposition: {t_comp:.1f} s ({comp.settings['algorithm']}), head circuits: {t_circ:.1f} s")
    for kind in "QKV":
        h = comp.headline(5)[kind]
        print(
            f"{kind}-composition baseline {h['baseline_mean']:.4f} ± {h['baseline_std']:.5f}; "
            f"{h['frac_above_3std']:.1%} of pairs > 3 std; top [l1, h1, l2, h2, score, z]: {h['top']}"
        )
    for e in circ.headline(8)["top_copying"]:
        print(
            f"copying L{e['layer']}H{e['head']} {e['copying']:.3f} (eigenvalue ratio {e['eigenvalue_ratio']:+.3f})  "
            f"reads {e['read']} -> writes {e['write']}"
        )
    print("top copy suppression:", circ.headline(5)["top_copy_suppression"], "null max:", circ.null_max)
    print("most negative eigenvalue ratio:", circ.headline(5)["most_negative"])
