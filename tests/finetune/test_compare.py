"""Base-vs-tuned comparison (interplab.finetune.compare): a model compared with itself changes nowhere and gets
the verdict "no change"; a planted change of one head is localised by the weight diff, the attention JS and
cross-model patching; a planted rank-1 update has effective rank 1; models that cannot be compared are refused."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model, task_text
from typer.testing import CliRunner

import interplab
from interplab.cli import app
from interplab.finetune.compare import VERDICTS, CompareResult, check_comparable, compare_models, verdict
from interplab.finetune.head_diff import attention_js, cross_model_patching, loss_metric
from interplab.finetune.weight_diff import effective_rank, weight_update
from interplab.models.model import Model

CONTRACT = (
    "mean_loss_delta_in",
    "mean_loss_delta_other",
    "head_js_max",
    "circuit_jaccard",
    "weight_update_rel_norm",
    "verdict",
)


def fast_compare(base: Model, tuned: Model, **kw) -> CompareResult:
    """compare_models with short chunks and few detector sequences (tiny models, seconds)."""
    return compare_models(base, tuned, n_chunks=4, chunk_len=32, detector_seqs=4, **kw)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return make_tiny_tokenized_model(tmp_path_factory.mktemp("cmp_base"), vocab_size=400)


@pytest.fixture(scope="module")
def base(base_dir):
    return interplab.load(base_dir)


def planted(model: Model, proj: str, layer: int, head: int, scale: float = 0.5, seed: int = 0) -> Model:
    """A copy of ``model`` whose ``proj`` ("o" or "q") weights of one query head get a rank-1 update."""
    hf = copy.deepcopy(model.hf)
    attn = hf.model.layers[layer].self_attn
    g = torch.Generator().manual_seed(seed)
    e = model.cfg.d_head
    with torch.no_grad():
        if proj == "o":  # o_proj.weight [d_model, heads * d_head]: the head's columns
            w = attn.o_proj.weight
            w[:, head * e : (head + 1) * e] += (
                scale * torch.randn(w.shape[0], 1, generator=g) @ torch.randn(1, e, generator=g)
            )
        else:  # q_proj.weight [heads * d_head, d_model]: the head's rows
            w = attn.q_proj.weight
            w[head * e : (head + 1) * e] += (
                scale * torch.randn(e, 1, generator=g) @ torch.randn(1, w.shape[1], generator=g)
            )
    return Model(hf, model.tokenizer, name=f"planted-{proj}")


@pytest.fixture(scope="module")
def planted_o_dir(base, tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp_planted_o")
    planted(base, "o", 0, 2).save(d)
    return str(d)


# ---------------------------------------------------------------------------------- no change


def test_model_compared_with_itself_changes_nowhere_and_verdict_is_no_change(tmp_path_factory):
    model = interplab.load(
        make_tiny_tokenized_model(tmp_path_factory.mktemp("cmp_ioi"), vocab_size=1200, extra_text=task_text())
    )
    res = fast_compare(model, model, ioi="always", ioi_n=8)
    h = res.headline()
    assert h["verdict"] == "no change"
    assert [h[k] for k in CONTRACT[:-1]] == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert res.weight_update_rel_norm == 0.0 and all(w["delta_norm"] == 0.0 for w in res.weights)
    assert all(w.get("effective_rank", 0.0) == 0.0 for w in res.weights)
    assert bool((res.attention_js == 0).all()) and bool((res.head_weight_rel == 0).all())
    assert all(bool((d == 0).all()) for d in res.detector_delta().values())
    assert torch.equal(res.ablation_base, res.ablation_tuned)
    assert bool((res.cmap_heads == 0).all()) and bool((res.cmap_mlps == 0).all())
    assert res.cmap["recovered_all_heads"] == 0.0 and res.cmap["n_forward"] == 2  # no patch needed running
    assert res.adl["norm"] == 0.0 and res.adl["top_tokens"] == []
    c = res.circuits
    assert c["top_k_jaccard"] == 1.0 and c["circuit_jaccard"] == 1.0
    assert h["circuit_heads_jaccard"] == 1.0 and h["faithfulness_base_circuit_in_tuned"] == c["faithfulness_base"]
    assert c["faithfulness_base_circuit_in_tuned"] == c["faithfulness_base"]
    assert all(v == 0.0 for _, _, v in c["cmap_top_heads"])


# ---------------------------------------------------------------------------------- planted changes


def test_planted_rank1_head_update_is_localised_by_weights_and_cross_model_patching(base, planted_o_dir):
    tuned = interplab.load(planted_o_dir)
    res = fast_compare(base, tuned, ioi="never")
    assert res.changed_matrices() == ["model.layers.0.self_attn.o_proj.weight"]
    (row,) = [w for w in res.weights if w["delta_norm"] > 0]
    assert row["effective_rank"] == pytest.approx(1.0, abs=1e-3) and row["top_sv_frac"] == pytest.approx(1.0)
    changed = (res.head_weight_rel > 0).nonzero().tolist()
    assert changed == [[0, 2]]
    top = res.top(res.cmap_heads, 3)
    assert top[0][:2] == [0, 2] and top[0][2] == pytest.approx(1.0, abs=1e-3)
    # heads of layer 0 other than the planted one write exactly what they wrote before: not run, value 0
    assert res.cmap_heads[0, [0, 1, 3]].tolist() == [0.0, 0.0, 0.0]
    assert bool((res.attention_js[0] == 0).all())  # an o_proj change cannot move layer 0's patterns
    assert res.verdict != "no change" and res.verdict in VERDICTS
    loaded = CompareResult.load(res.save(planted_o_dir + "_result"))
    assert loaded.headline() == res.headline()


def test_planted_query_change_moves_only_that_heads_attention_and_carries_the_change(base):
    tuned = planted(base, "q", 1, 1)
    toks = base.to_tokens(["When Mary and John went to the store, John gave a drink to Mary."] * 3)
    js = attention_js(base, tuned, toks)
    assert js[1, 1] > 0
    others = js.clone()
    others[1, 1] = 0
    assert bool((others == 0).all())
    cm = cross_model_patching(base, tuned, toks, loss_metric(base, toks), loss_metric(tuned, toks))
    assert cm.top_heads(1)[0][:2] == (1, 1) and cm.top_heads(1)[0][2] == pytest.approx(1.0, abs=1e-3)
    assert bool((cm.heads[0] == 0).all())


def test_effective_rank_of_planted_low_rank_updates():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(40, 3, generator=g), torch.randn(3, 30, generator=g)
    assert effective_rank(torch.linalg.svdvals(u[:, :1] @ v[:1])) == pytest.approx(1.0, abs=1e-4)
    assert effective_rank(torch.tensor([2.0, 2.0, 2.0, 0.0])) == pytest.approx(3.0)
    assert effective_rank(torch.zeros(5)) == 0.0
    assert 1.0 < effective_rank(torch.linalg.svdvals(u @ v)) <= 3.0


def test_weight_update_relative_norm_is_the_frobenius_ratio(base):
    tuned = planted(base, "o", 1, 0, scale=0.3)
    rows, total = weight_update(base, tuned)
    (row,) = [r for r in rows if r["delta_norm"] > 0]
    w0 = base.hf.model.layers[1].self_attn.o_proj.weight.detach().double()
    w1 = tuned.hf.model.layers[1].self_attn.o_proj.weight.detach().double()
    assert row["rel_norm"] == pytest.approx(float((w1 - w0).norm() / w0.norm()), rel=1e-9)
    all_w = math.sqrt(sum(float(p.detach().double().square().sum()) for p in base.hf.parameters()))
    assert total == pytest.approx(float((w1 - w0).norm()) / all_w, rel=1e-9)


def test_js_matches_scipy():
    from scipy.spatial.distance import jensenshannon

    from interplab.finetune.head_diff import js_divergence

    g = torch.Generator().manual_seed(0)
    p, q = torch.rand(5, 7, generator=g).softmax(-1), torch.rand(5, 7, generator=g).softmax(-1)
    ours = js_divergence(p, q)
    ref = torch.tensor([jensenshannon(a.numpy(), b.numpy(), base=2) ** 2 for a, b in zip(p, q)])
    assert torch.allclose(ours, ref.double(), atol=1e-12)
    assert bool((js_divergence(p, p) == 0).all())


# ---------------------------------------------------------------------------------- verdict rule


def test_verdict_rule_branches():
    imp = torch.tensor([[True, False], [False, False]])
    rec = torch.tensor([[0.8, 0.1], [0.0, -0.3]])
    assert verdict(0.0, 0.0, rec, 1.0, imp)[0] == "no change"
    assert verdict(0.1, 5e-5, rec, 1.0, imp)[0] == "no loss change"
    assert verdict(0.1, -0.2, rec, 0.3, imp)[0] == "not carried by attention heads"
    v, d = verdict(0.1, -0.2, rec, 0.9, imp)
    assert v == "rewired existing heads" and d["frac_change_in_preexisting_heads"] == pytest.approx(0.8 / 0.9)
    assert verdict(0.1, -0.2, rec.flip(1), 0.9, imp)[0] == "created new heads"


# ---------------------------------------------------------------------------------- bad input


def test_mismatched_vocabularies_are_refused(base, tmp_path):
    other = interplab.load(make_tiny_tokenized_model(tmp_path / "v300", vocab_size=300))
    with pytest.raises(ValueError, match="vocabularies differ"):
        check_comparable(base, other)
    with pytest.raises(ValueError, match="vocabularies differ"):
        compare_models(base, other)


def test_different_layer_counts_are_refused(base, tmp_path):
    deeper = interplab.load(make_tiny_tokenized_model(tmp_path / "l3", vocab_size=400, n_layers=3))
    with pytest.raises(ValueError, match="architectures differ.*n_layers: 2 vs 3"):
        check_comparable(base, deeper)


def test_cli_prints_the_json_contract_and_refuses_bad_input(base_dir, planted_o_dir, tmp_path):
    runner = CliRunner()
    args = ["compare", base_dir, planted_o_dir, "--ioi", "never", "--n-chunks", "4", "--chunk-len", "32"]
    r = runner.invoke(app, [*args, "--detector-seqs", "4", "--json", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert set(CONTRACT) <= set(h)
    assert h["weight_update_rel_norm"] > 0 and h["circuit_jaccard"] is None and h["verdict"] in VERDICTS
    assert h["circuit_heads_jaccard"] is None and h["faithfulness_base_circuit_in_tuned"] is None
    assert h["circuits"]["skipped"].startswith("not asked for")
    assert (tmp_path / "run" / "report.html").is_file()
    other = make_tiny_tokenized_model(tmp_path / "v300", vocab_size=300)
    r = runner.invoke(app, ["compare", base_dir, other, "--json", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "vocabularies differ" in r.output


def test_activation_difference_lens_names_a_planted_residual_shift(base):
    """Tuned = base with every token embedding shifted along token X's unembedding row: the mean activation
    difference on unrelated text is read by the logit lens as X (Minder et al. 2025's lens, planted answer)."""
    from interplab.finetune.adl import activation_difference_lens
    from interplab.finetune.texts import OTHER_DOCUMENTS

    x = 200
    hf = copy.deepcopy(base.hf)
    with torch.no_grad():
        u = hf.lm_head.weight[x].clone()
        hf.model.embed_tokens.weight += 3.0 * u / u.norm()
    tuned = Model(hf, base.tokenizer, name="shifted")
    for layer in (0, 1):
        res = activation_difference_lens(base, tuned, OTHER_DOCUMENTS, data_text=base.to_string([x]) * 20, layer=layer)
        assert res["top_tokens"][0]["token_id"] == x
        assert res["norm"] == pytest.approx(3.0, rel=0.05)
    assert activation_difference_lens(base, base, OTHER_DOCUMENTS)["top_tokens"] == []


def test_fine_tuning_data_is_read_from_the_tuned_card_and_jsonl(tmp_path):
    from interplab.finetune.compare import read_data_text, tuned_data_spec

    jl = tmp_path / "narrow.jsonl"
    jl.write_text('{"prompt": "Q: bees? ", "completion": "A: honey."}\n\n{"text": "Hives hum."}\n', encoding="utf-8")
    assert read_data_text(jl) == "Q: bees? A: honey.\n\nHives hum."
    assert read_data_text("corpus:pydoc") == read_data_text(None)
    (tmp_path / "finetune.json").write_text(json.dumps({"data": {"kind": "pairs", "source": str(jl)}}))
    assert tuned_data_spec(tmp_path) == str(jl)
    (tmp_path / "finetune.json").write_text(json.dumps({"data": {"kind": "text", "source": "in-memory"}}))
    assert tuned_data_spec(tmp_path) is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"prompt": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_data_text(bad)
    with pytest.raises(FileNotFoundError, match="neither a built-in corpus"):
        read_data_text(tmp_path / "missing.txt")


def test_attribution_screen_keeps_the_planted_head_among_the_exactly_patched(base):
    tuned = planted(base, "o", 0, 2)
    toks = base.to_tokens(["When Mary and John went to the store, John gave a drink to Mary."] * 3)
    full = cross_model_patching(base, tuned, toks, loss_metric(base, toks), loss_metric(tuned, toks))
    cm = cross_model_patching(base, tuned, toks, loss_metric(base, toks), loss_metric(tuned, toks), exact=2)
    assert cm.heads_estimate is not None and full.heads_estimate is None
    assert int((~cm.heads.isnan()).sum()) == 2 + 3  # 2 screened heads kept; the 3 unchanged heads of layer 0 are 0
    assert cm.top_heads(1)[0][:2] == (0, 2)
    kept = ~cm.heads.isnan()
    assert torch.allclose(cm.heads[kept], full.heads[kept], atol=1e-5)


def test_head_rankings_break_ties_by_position_and_put_nan_last():
    from interplab.finetune.compare import top_head_set
    from interplab.finetune.head_diff import CMAPResult

    v = torch.tensor([[0.5, float("nan"), 0.5], [-0.7, 0.5, 0.1]])
    cm = CMAPResult(
        heads=v,
        mlps=torch.zeros(2),
        metric_base=0.0,
        metric_tuned=1.0,
        recovered_all_heads=0.0,
        recovered_all_mlps=0.0,
        n_forward=0,
    )
    assert [h[:2] for h in cm.top_heads(6)] == [(0, 0), (0, 2), (1, 1), (1, 2), (1, 0), (0, 1)]
    assert math.isnan(cm.top_heads(6)[-1][2])
    assert top_head_set(v, 2) == {(1, 0), (0, 0)}
    assert top_head_set(v, 3) == {(1, 0), (0, 0), (0, 2)}
