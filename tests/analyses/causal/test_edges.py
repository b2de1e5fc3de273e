"""Edge attribution patching (EAP, EAP-IG), exact edge patching and edge-circuit faithfulness: the planted
induction circuit, gradient exactness against finite differences on several families, EAP = exact where the
metric is linear in the input, rank agreement with exact patching, faithfulness end points, node-circuit
equivalence, bad input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import FAMILIES
from scipy.stats import spearmanr

import interplab
from interplab.analyses.causal.circuits import all_nodes, circuit_metric, template_means
from interplab.analyses.causal.edges import (
    EdgeAttributionResult,
    edge_attribution_patching,
    edge_circuit_metric,
    edge_graph,
    exact_edge_patching,
    input_gradients,
    node_circuit_edges,
)
from interplab.analyses.causal.engine import end_metric
from interplab.hooks import Apply, Patch
from interplab.models.planted import induction_model
from interplab.models.scoring import unembed_resid
from interplab.tasks import pairs_from_tokens

pytestmark = pytest.mark.usefixtures("one_thread")

# The planted model's circuit under the corruption "A1 (the first copy of the token the prompt ends on) replaced":
# the previous-token head L0H0 reads the token at A1 through its value and writes it into the previous-token block
# at B1; the induction head L1H0's key at B1 reads that block (K-composition); L1H0's output is read by the logits.
# L1H0's value also reads the token block directly wherever END attends (A1 among them, with a soft pattern).
# Every other edge carries nothing: the other heads have 0.02-scale random weights.
PLANTED_CIRCUIT = {"input->0.0.v", "0.0->1.0.k", "1.0->logits", "input->1.0.v"}


def planted_pairs(model, n: int = 12, s: int = 10, seed: int = 1):
    """Clean: ``t_0..t_{s-1}`` then ``t_0..t_i`` (END = the repeated ``t_i``; induction predicts ``t_{i+1}``).
    Corrupt: ``t_i`` in the first copy (A1) replaced by a fresh token ``c``, so no earlier position is preceded by
    the END token and induction has nothing to copy. Metric: logit(t_{i+1}) − logit(c)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.stack([torch.randperm(model.cfg.d_vocab, generator=g)[: s + 1] for _ in range(n)])
    seq, fresh = rows[:, :s], rows[:, s]
    i = s // 2
    clean = torch.cat([seq, seq[:, : i + 1]], 1)
    corrupt = clean.clone()
    corrupt[:, i] = fresh
    return pairs_from_tokens("planted-induction-A1", clean, corrupt, seq[:, i + 1], fresh, positions={"A1": i})


def random_pairs(model, n: int = 4, p: int = 8, seed: int = 0):
    """Random token pairs differing at two positions; random answer / wrong tokens."""
    g = torch.Generator().manual_seed(seed)
    V = model.cfg.d_vocab
    clean = torch.randint(0, V, (n, p), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = torch.randint(0, V, (n,), generator=g)
    corrupt[:, 5] = torch.randint(0, V, (n,), generator=g)
    return pairs_from_tokens("random", clean, corrupt, torch.randint(0, V, (n,), generator=g), (clean[:, 0] + 1) % V)


@pytest.fixture(scope="module")
def planted():
    return induction_model(sharpness=3.0)


@pytest.fixture(scope="module")
def ppairs(planted):
    return planted_pairs(planted)


# ---------------------------------------------------------------------------------------------- planted circuit


@pytest.mark.parametrize("steps", [1, 5])
def test_eap_finds_exactly_the_planted_edges(planted, ppairs, steps):
    r = edge_attribution_patching(planted, ppairs, ig_steps=steps)
    ranked = r.ranked()
    top = {f"{u}->{v}" for u, v, _ in ranked[: len(PLANTED_CIRCUIT)]}
    assert top == PLANTED_CIRCUIT
    # the K-composition edge is the strongest edge between two heads, and among the two strongest edges overall
    head_to_head = [(u, v) for u, v, _ in ranked if u != "input" and v != "logits"]
    assert head_to_head[0] == ("0.0", "1.0.k")
    assert ("0.0", "1.0.k") in [(u, v) for u, v, _ in ranked[:2]] or steps == 5
    # every edge off the circuit is ~0 (< 1% of the largest score)
    biggest = abs(ranked[0][2])
    assert all(abs(s) < 0.01 * biggest for u, v, s in ranked[len(PLANTED_CIRCUIT) :])
    # the scores estimate the noising effect: the circuit edges lower the metric
    assert all(s < 0 for _, _, s in ranked[:3])
    # exact edge patching agrees on the circuit
    g = edge_graph(planted)
    idx = [(g.upstream.index(u), g.downstream.index(v)) for u, v, _ in ranked]
    ex = exact_edge_patching(planted, ppairs, idx)
    top_exact = {f"{ranked[i][0]}->{ranked[i][1]}" for i in ex.abs().argsort(descending=True)[:4].tolist()}
    assert top_exact == PLANTED_CIRCUIT


def test_planted_circuit_faithfulness(planted, ppairs):
    r = edge_attribution_patching(planted, ppairs, top_k=[3, 4, 1000])
    by_k = {c["top_k"]: c for c in r.circuits}
    assert by_k[1000]["n_edges"] == edge_graph(planted).n_edges
    assert by_k[1000]["faithfulness"] == pytest.approx(1.0, abs=1e-5)
    assert by_k[4]["n_edges"] == 4 and by_k[4]["n_nodes"] == 4  # input, L0H0, L1H0, logits
    assert by_k[4]["faithfulness"] > 0.99  # the four planted edges carry (almost) everything
    assert by_k[3]["faithfulness"] < by_k[4]["faithfulness"]
    assert by_k[3]["metric_empty"] == pytest.approx(float(r.corrupt_metric.mean()), abs=1e-5)


# ---------------------------------------------------------------------------------------------- gradient exactness


def _patched_input_gradient(model, pairs, name: str) -> torch.Tensor:
    """d metric / d (input of ``name`` only) by a second, independent route: a zero leaf ``d`` is added to the
    residual stream of one run of the whole model, whose q / k / v (MLP output) of that head (MLP) is patched
    into a clean run with :class:`~interplab.hooks.Patch`; autograd through both runs gives d metric / d d."""
    cfg = model.cfg
    mask = pairs.run_mask()
    d = torch.zeros(*pairs.clean.shape, cfg.d_model, requires_grad=True)
    with torch.enable_grad():
        if name == "logits":
            final = model.run(pairs.clean, attention_mask=mask, return_resid=True).logits
            m = end_metric(model, pairs, final + d)
        else:
            if name.startswith("MLP"):
                layer = int(name[3:])
                hk, heads = f"blocks.{layer}.hook_mlp_out", None
                point = f"blocks.{layer}.hook_resid_pre" if cfg.parallel_attn_mlp else f"blocks.{layer}.hook_resid_mid"
            else:
                layer, h, t = name.split(".")
                hk, heads, point = f"blocks.{layer}.attn.hook_{t}", [int(h)], f"blocks.{layer}.hook_resid_pre"
            add = Apply(point, fn=lambda x, ctx: x + d)
            _, c = model.run(pairs.clean, attention_mask=mask, interventions=[add], cache=[hk], grad=True)
            patch = Patch(hk, heads=heads, source=c[hk])
            m = pairs.metric_from_logits(
                model.run(pairs.clean, attention_mask=mask, interventions=[patch], grad=True).logits
            )
        (grad,) = torch.autograd.grad(m.sum(), d)
    return grad


@pytest.mark.parametrize("family", FAMILIES)
def test_input_gradients_match_an_independent_autograd(tiny_dirs, family):
    """Per-head q / k / v input gradients (rotary, GQA keys/values expanded per query head, Gemma's q/k-norm,
    GPT-NeoX's parallel residual, OPT's query pre-scaling, GPT-Neo's own kernel) and MLP input gradients equal
    autograd through a patched run, in every family."""
    model = interplab.load(tiny_dirs[family])
    pairs = random_pairs(model, n=2, p=6)
    _, grads = input_gradients(model, pairs)
    g = edge_graph(model)
    names = ["0.1.q", "1.3.k", "1.2.v", "2.0.k", "0.0.v", "2.3.q", "logits"]
    if model.cfg.d_mlp:
        names += ["MLP0", "MLP1", "MLP2"]
    for name in names:
        ours, ref = grads[g.downstream.index(name)], _patched_input_gradient(model, pairs, name)
        assert ref.abs().max() > 0, name
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()), msg=name)


def test_input_gradients_match_finite_differences():
    """Directional derivatives of the metric along random directions of each input, by central finite
    differences in float64 (a model without the float32 softmax of eager attention in its q / v / MLP paths)."""
    model = induction_model(sharpness=3.0)
    model.hf.double()
    pairs = planted_pairs(model, n=3)
    _, grads = input_gradients(model, pairs)
    g = edge_graph(model)
    gen = torch.Generator().manual_seed(0)
    for name in ["1.0.q", "1.0.v", "0.0.v", "0.1.q", "logits"]:
        grad = grads[g.downstream.index(name)].double()
        delta = torch.randn(grad.shape, generator=gen, dtype=torch.float64)
        eps = 1e-5
        vals = []
        for sgn in (1, -1):
            d = sgn * eps * delta
            if name == "logits":
                final = model.run(pairs.clean, return_resid=True).logits
                logits = unembed_resid(model, final + d)
            else:
                layer, h, t = name.split(".")
                hk = f"blocks.{layer}.attn.hook_{t}"
                _, c = model.run(
                    pairs.clean,
                    interventions=[Apply(f"blocks.{layer}.hook_resid_pre", fn=lambda x, ctx, d=d: x + d)],
                    cache=[hk],
                )
                logits = model.run(pairs.clean, interventions=[Patch(hk, heads=[int(h)], source=c[hk])]).logits
            end = logits[:, -1].detach()
            rows = torch.arange(len(pairs))
            vals.append(float((end[rows, pairs.answer_ids] - end[rows, pairs.wrong_ids]).sum()))
        fd = (vals[0] - vals[1]) / (2 * eps)
        assert float((grad * delta).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-9), name


def test_gqa_key_gradients_differ_per_query_head(tiny_dirs):
    """Two query heads sharing a kv head read the same keys but have their own key-input edges."""
    model = interplab.load(tiny_dirs["llama"])  # 4 query heads, 2 kv heads
    pairs = random_pairs(model, n=2, p=6)
    _, grads = input_gradients(model, pairs)
    g = edge_graph(model)
    a, b = grads[g.downstream.index("1.0.k")], grads[g.downstream.index("1.1.k")]
    assert a.abs().sum() > 0 and b.abs().sum() > 0 and not torch.allclose(a, b)


# ---------------------------------------------------------------------------------------------- EAP vs exact


def test_eap_equals_exact_where_the_metric_is_linear_in_the_input(tiny_dirs):
    """In an attention-only model without norms the logit difference is linear in the logits' input and in the
    last layer's value inputs (their patterns read q / k, which such an edge leaves clean): there EAP = exact."""
    model = interplab.load(tiny_dirs["toy_attn_only"])
    pairs = random_pairs(model)
    r = edge_attribution_patching(model, pairs)
    g = edge_graph(model)
    last = model.cfg.n_layers - 1
    linear = [
        (u, v)
        for u, v in torch.nonzero(g.valid).tolist()
        if g.downstream[v] == "logits" or (g.down_layer[v] == last and g.downstream[v].endswith(".v"))
    ]
    ex = exact_edge_patching(model, pairs, linear)
    est = torch.tensor([float(r.scores[u, v]) for u, v in linear])
    assert ex.abs().max() > 1e-4
    torch.testing.assert_close(est, ex, atol=1e-5, rtol=1e-4)


def test_mean_reference_scores_estimate_mean_ablation(tiny_dirs):
    """With reference="mean" the scores estimate patching the per-template mean into one edge: on the linear edges
    of an attention-only model without norms they equal exact edge patching from the template means."""
    model = interplab.load(tiny_dirs["toy_attn_only"])
    pairs = random_pairs(model, n=6)
    r = edge_attribution_patching(model, pairs, reference="mean")
    g = edge_graph(model)
    logits = [(u, v) for u, v in torch.nonzero(g.valid).tolist() if g.downstream[v] == "logits"]
    hooks = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.attn.hook_result" for i in range(model.cfg.n_layers)]
    _, cx = model.run(pairs.corrupt, cache=hooks)
    ex = exact_edge_patching(model, pairs, logits, corrupt_cache=template_means(pairs, cx, hooks))
    est = torch.tensor([float(r.scores[u, v]) for u, v in logits])
    assert ex.abs().max() > 1e-4
    torch.testing.assert_close(est, ex, atol=1e-5, rtol=1e-4)


def test_eap_is_first_order_through_softmax(planted, ppairs):
    """Through the induction head's key (softmax) EAP is only the linear estimate: it differs from exact edge
    patching on the K-composition edge, and EAP-IG, which averages gradients along the path from the corrupt
    input, lands closer to the exact value."""
    g = edge_graph(planted)
    edge = (g.upstream.index("0.0"), g.downstream.index("1.0.k"))
    (ex,) = exact_edge_patching(planted, ppairs, [edge]).tolist()
    eap = float(edge_attribution_patching(planted, ppairs).scores[edge])
    ig = float(edge_attribution_patching(planted, ppairs, ig_steps=5).scores[edge])
    assert abs(eap - ex) > 0.05 * abs(ex)
    assert abs(ig - ex) < abs(eap - ex)


@pytest.mark.parametrize("family", ["toy", "gpt2", "llama"])
def test_eap_ranks_edges_like_exact_edge_patching(tiny_dirs, family):
    """All 262 edges of a tiny random model, 4 random pairs: Spearman(EAP, exact) measured 0.85 (toy), 0.87 (gpt2),
    0.94 (llama); floor 0.8."""
    model = interplab.load(tiny_dirs[family])
    pairs = random_pairs(model)
    r = edge_attribution_patching(model, pairs, exact_edges=-1)
    assert r.exact["n_edges"] == edge_graph(model).n_edges
    assert r.exact["spearman"] > 0.8
    est, ex = torch.tensor(r.exact["estimate"]), torch.tensor(r.exact["exact"])
    rho: Any = spearmanr(est, ex)
    assert float(rho[0]) == pytest.approx(r.exact["spearman"], abs=1e-4)


# ---------------------------------------------------------------------------------------------- faithfulness


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gemma3"])
def test_full_circuit_is_clean_and_empty_circuit_is_corrupt(tiny_dirs, family):
    model = interplab.load(tiny_dirs[family])
    pairs = random_pairs(model)
    g = edge_graph(model)
    mask = pairs.run_mask()
    hooks = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.attn.hook_result" for i in range(model.cfg.n_layers)]
    hooks += [f"blocks.{i}.hook_mlp_out" for i in range(model.cfg.n_layers) if model.cfg.d_mlp]
    lc, cc = model.run(pairs.clean, cache=hooks, attention_mask=mask)
    lx, cx = model.run(pairs.corrupt, cache=hooks, attention_mask=mask)
    full = edge_circuit_metric(model, pairs, g.valid, cx, clean_cache=cc)
    empty = edge_circuit_metric(model, pairs, torch.zeros_like(g.valid), cx, clean_cache=cc)
    torch.testing.assert_close(full, pairs.metric_from_logits(lc).float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(empty, pairs.metric_from_logits(lx).float(), atol=1e-4, rtol=1e-4)


def test_node_circuit_through_edges_equals_node_ablation(tiny_dirs):
    """A node-level circuit as edges (every edge between kept nodes) with the mean reference gives
    circuits.py's metric for that node set: the two faithfulness scales are the same."""
    model = interplab.load(tiny_dirs["toy"])
    pairs = random_pairs(model, n=6)
    nodes = all_nodes(model)
    kept = [nodes[i] for i in (0, 3, 5, 6, 9, len(nodes) - 2)]
    removed = [nd for nd in nodes if nd not in kept]
    z = [f"blocks.{i}.attn.hook_z" for i in range(3)]
    result = [f"blocks.{i}.attn.hook_result" for i in range(3)]
    mlp = [f"blocks.{i}.hook_mlp_out" for i in range(3)]
    _, cx = model.run(pairs.corrupt, cache=["blocks.0.hook_resid_pre", *z, *result, *mlp])
    node_metric = circuit_metric(model, pairs, removed, template_means(pairs, cx, z + mlp))
    ref = template_means(pairs, cx, ["blocks.0.hook_resid_pre", *result, *mlp])
    edge_metric = float(edge_circuit_metric(model, pairs, node_circuit_edges(model, kept), ref).mean())
    assert edge_metric == pytest.approx(node_metric, abs=1e-5)


# ---------------------------------------------------------------------------------------------- result and errors


def test_result_round_trip_and_headline(planted, ppairs, tmp_path):
    r = edge_attribution_patching(planted, ppairs, ig_steps=2, top_k=[4], exact_edges=5)
    h = r.headline()
    assert h["method"] == "eap-ig" and h["top_edges"][0][0] in PLANTED_CIRCUIT
    assert h["circuits"][0]["n_edges"] == 4 and h["exact_n_edges"] == 5
    r.save(tmp_path)
    back = EdgeAttributionResult.load(tmp_path)
    assert back.ranked(4) == r.ranked(4) and back.circuits == r.circuits
    assert list(back.to_frame().columns) == ["upstream", "downstream", "score", "rank"]
    fig: Any = back.plot()
    assert len(fig.data) == 1


def test_bad_input_is_named(planted, ppairs, tiny_dirs):
    with pytest.raises(ValueError, match="ig_steps"):
        edge_attribution_patching(planted, ppairs, ig_steps=0)
    g = edge_graph(planted)
    with pytest.raises(ValueError, match="no edge 1.0 -> 0.0.q"):
        exact_edge_patching(planted, ppairs, [(g.upstream.index("1.0"), g.downstream.index("0.0.q"))])
    gemma = interplab.load(tiny_dirs["gemma3"])
    with pytest.raises(ValueError, match="node-level circuits"):
        edge_attribution_patching(gemma, random_pairs(gemma))


def test_graph_edges():
    model = induction_model()
    g = edge_graph(model)  # 2 layers x 2 heads, attention-only
    assert g.upstream == ["input", "0.0", "0.1", "1.0", "1.1"]
    assert len(g.downstream) == 2 * 2 * 3 + 1
    # input -> 13 inputs, each layer-0 head -> 6 layer-1 inputs + logits, layer-1 heads -> logits
    assert g.n_edges == 13 + 2 * 7 + 2
