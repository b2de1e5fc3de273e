"""The difference-lens topic benchmark (interplab.finetune.adl.identify_topics): K planted "fine-tunes" on
disjoint token sets are each identified (accuracy 1.0), a model compared with itself gets no prediction, the
built-in topic texts are distinct, bad input is refused, and the CLI prints its JSON keys."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model
from typer.testing import CliRunner

import interplab
from interplab.cli import app
from interplab.finetune.adl import (
    IdentifyResult,
    builtin_topics,
    distinctive_tokens,
    identify_topics,
    score_topics,
    unrelated_documents,
)
from interplab.finetune.texts import OTHER_DOCUMENTS, other_text
from interplab.models.model import Model

TOPIC_WORDS = {
    "volcano": ["magma", "lava", "crater", "basalt", "caldera", "tephra"],
    "bread": ["levain", "sourdough", "banneton", "autolyse", "crumb", "proofing"],
    "light": ["lighthouse", "lantern", "keeper", "beacon", "foghorn", "fresnel"],
    "chess": ["gambit", "bishop", "castling", "rook", "knight", "checkmate"],
    "bees": ["honeybee", "nectar", "pollen", "drone", "propolis", "swarm"],
}
K = len(TOPIC_WORDS)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """The tiny tokenized Llama with each topic's words as single tokens."""
    sentences = [" " + " ".join(w) + "." for w in TOPIC_WORDS.values()]
    return make_tiny_tokenized_model(tmp_path_factory.mktemp("adl_base"), vocab_size=800, extra_text=sentences * 20)


@pytest.fixture(scope="module")
def base(base_dir):
    return interplab.load(base_dir)


@pytest.fixture(scope="module")
def topics(base) -> dict[str, list[int]]:
    """Per topic, the token ids of its words (each one token, absent from the unrelated text): disjoint sets."""
    tok = base.tokenizer
    assert tok is not None
    unrelated = set(tok(other_text(), add_special_tokens=False)["input_ids"])
    out = {}
    for t, words in TOPIC_WORDS.items():
        ids = [tok(" " + w, add_special_tokens=False)["input_ids"] for w in words]
        out[t] = [i[0] for i in ids if len(i) == 1 and i[0] not in unrelated]
        assert len(out[t]) >= 4, (t, ids)
    return out


def topic_text(base: Model, ids: list[int]) -> str:
    return "".join(base.to_string([i]) for i in ids) * 10


def planted(base: Model, ids: list[int], scale: float = 3.0) -> Model:
    """``base`` with every token embedding shifted along the mean unembedding row of ``ids``: a model that leans
    towards one topic's tokens whatever it reads (what a narrow fine-tune does, planted)."""
    hf = copy.deepcopy(base.hf)
    with torch.no_grad():
        u = hf.lm_head.weight[ids].mean(0)
        hf.model.embed_tokens.weight += scale * u / u.norm()
    return Model(hf, base.tokenizer, name=f"planted-{ids[0]}")


def test_planted_topic_fine_tunes_are_all_identified(base, topics, tmp_path):
    texts = {t: topic_text(base, ids) for t, ids in topics.items()}
    tuned = {t: planted(base, ids) for t, ids in topics.items()}
    res = identify_topics(base, tuned, texts, list(OTHER_DOCUMENTS), layers=[1, 0])
    assert res.layers == [1, 0] and len(res.rows) == 2 * K
    for layer in (0, 1):
        for method in ("zscore", "relevance"):
            acc = res.accuracy(method, layer)
            assert acc["accuracy"] == 1.0 and acc["correct"] == K and acc["chance"] == pytest.approx(1 / K)
            lo, hi = acc["ci"]
            assert 0.5 < lo < 1.0 and hi == 1.0  # Wilson: 5 of 5 is not a certainty
    assert res.confusion() == {t: {t: 1} for t in topics}
    # distinctive tokens: each topic's planted words exactly
    assert res.n_distinctive == {t: len(ids) for t, ids in topics.items()}
    for r in res.rows_at():
        s = r["scores"]["zscore"]
        assert max(s, key=lambda t: s[t]) == r["truth"] and s[r["truth"]] > 1.0
    h = res.headline()
    assert h["accuracy"] == 1.0 and h["k"] == K and h["layer"] == 1
    assert [p["predicted"] for p in h["predictions"]] == list(topics)
    assert h["accuracy_by_position"] == [1.0] * 5  # the planted shift is there at every position
    assert all(len(r["norm_by_position"]) == 5 and r["norm"] > 0 for r in res.rows)
    loaded = IdentifyResult.load(res.save(tmp_path))
    assert loaded.headline() == h
    assert res.to_frame().shape == (2 * K * K, 8)
    # leaving position 0 out of the mean keeps the per-position reading and still names every topic
    res1 = identify_topics(base, tuned, texts, list(OTHER_DOCUMENTS), layers=[1, 0], skip_first=True)
    assert res1.accuracy()["accuracy"] == 1.0 and res1.headline()["skip_first"] is True
    for a, b in zip(res.rows, res1.rows, strict=True):
        assert a["norm_by_position"] == b["norm_by_position"] and a["norm"] != b["norm"]


def test_real_lora_fine_tunes_on_disjoint_topics_are_identified(base_dir, tmp_path):
    """Five real LoRA fine-tunes of the tiny Llama (unembedding scaled up so adapters can move the loss, as in
    test_finetune), each on text made only of one topic's words: the lens of the last layer names each topic."""
    import random

    from interplab.finetune import FinetuneConfig, finetune

    m = interplab.load(base_dir)
    with torch.no_grad():
        m.hf.lm_head.weight.mul_(20)
    d = str(tmp_path / "base")
    m.save(d)
    base = interplab.load(d)
    cfg = FinetuneConfig(
        targets=("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        rank=4,
        alpha=8,
        steps=12,
        batch_size=4,
        seq_len=24,
        lr=5e-2,
        log_every=4,
        ckpt_every=4,
        heldout_fraction=0.2,
        threads=1,
    )
    texts, tuned = {}, {}
    for t, words in TOPIC_WORDS.items():
        rng = random.Random(0)
        texts[t] = " ".join(" ".join(rng.sample(words, len(words))) + "." for _ in range(80))
        (tmp_path / f"{t}.txt").write_text(texts[t], encoding="utf-8")
        r = finetune(d, tmp_path / f"{t}.txt", cfg, progress=False)
        assert r.heldout_loss_after < r.heldout_loss_before - 2.0
        tuned[t] = r.model
    res = identify_topics(base, tuned, texts, list(OTHER_DOCUMENTS), layers=[1])
    assert res.accuracy("zscore")["accuracy"] == 1.0, res.headline()["predictions"]


def test_model_compared_with_itself_gets_no_prediction(base, topics):
    texts = {t: topic_text(base, ids) for t, ids in topics.items()}
    res = identify_topics(base, {"volcano": base}, texts, list(OTHER_DOCUMENTS))
    (row,) = res.rows
    assert row["norm"] == 0.0 and row["top_tokens"] == []
    assert row["predicted"] == {"zscore": None, "relevance": None}
    assert row["predicted_by_position"] == [None] * 5 and res.accuracy_by_position() == [0.0] * 5
    assert all(v == 0.0 for m in row["scores"].values() for v in m.values())
    assert res.accuracy()["accuracy"] == 0.0 and res.confusion() == {"volcano": {"none": 1}}


def test_scores_against_hand_computed_values():
    logits = torch.tensor([0.0, 4.0, 1.0, -1.0, 2.0, 0.0])
    tokens = {"a": {1: 3, 2: 1}, "b": {3: 1}}
    s = score_topics(logits, tokens, top_k=2)  # type: ignore[arg-type]
    z = (logits.double() - logits.double().mean()) / logits.double().std()
    assert s["zscore"]["a"] == pytest.approx(float((3 * z[1] + z[2]) / 4))
    assert s["zscore"]["b"] == pytest.approx(float(z[3]))
    assert s["relevance"] == {"a": 0.5, "b": 0.0}  # top-2 lens tokens are 1 and 4; only 1 is a's
    flat = score_topics(torch.zeros(6), tokens, top_k=2)  # type: ignore[arg-type]
    assert flat == {"zscore": {"a": 0.0, "b": 0.0}, "relevance": {"a": 0.0, "b": 0.0}}


def test_distinctive_tokens_exclude_shared_and_unrelated_tokens(base):
    d = distinctive_tokens(base, {"x": " Paris Paris city", "y": " city dog"}, " the dog")
    ids = lambda s: base.tokenizer(s, add_special_tokens=False)["input_ids"]
    assert set(d["x"]) == set(ids(" Paris Paris")) - set(ids(" city dog")) - set(ids(" the dog"))
    assert not set(d["y"]) & set(ids(" the dog"))


def test_builtin_topics_are_five_distinct_texts_of_original_prose(base):
    t = builtin_topics()
    assert sorted(t) == ["chess", "honeybees", "lighthouses", "sourdough", "volcanoes"]
    assert all(6000 <= len(x) <= 8500 and x.isascii() for x in t.values())
    words = {k: {w.strip(".,;:()'").lower() for w in x.split()} for k, x in t.items()}
    own = {k: w - set().union(*(w2 for k2, w2 in words.items() if k2 != k)) for k, w in words.items()}
    assert all(len(w) >= 150 for w in own.values()), {k: len(w) for k, w in own.items()}  # distinct vocabularies
    assert all(distinctive_tokens(base, t, other_text()).values())
    docs = unrelated_documents(n=50)
    assert len(docs) == 50 and all(d.strip() for d in docs)


def test_bad_input_is_refused(base, topics):
    texts = {t: topic_text(base, ids) for t, ids in topics.items()}
    with pytest.raises(ValueError, match="no candidate topic text"):
        identify_topics(base, {"nope": base}, texts, list(OTHER_DOCUMENTS))
    with pytest.raises(ValueError, match="at least 2 candidate topics"):
        identify_topics(base, {"volcano": base}, {"volcano": texts["volcano"]}, list(OTHER_DOCUMENTS))
    with pytest.raises(ValueError, match="layers must lie"):
        identify_topics(base, {"volcano": base}, texts, list(OTHER_DOCUMENTS), layers=[7])
    with pytest.raises(ValueError, match="skip_first needs k >= 2"):
        identify_topics(base, {"volcano": base}, texts, list(OTHER_DOCUMENTS), k=1, skip_first=True)
    with pytest.raises(ValueError, match="no distinctive token"):
        identify_topics(base, {"volcano": base}, {"volcano": " a", "bread": " a"}, list(OTHER_DOCUMENTS))


def test_cli_identifies_planted_topics_and_prints_json(base, base_dir, topics, tmp_path):
    spec = []
    for t in ("volcano", "bread", "light"):
        d = tmp_path / t
        planted(base, topics[t]).save(d)
        (tmp_path / f"{t}.txt").write_text(topic_text(base, topics[t]), encoding="utf-8")
        spec.append(f"{t}={d}")
    other = tmp_path / "other.txt"
    other.write_text(other_text(), encoding="utf-8")
    texts = ",".join(f"{t}={tmp_path / f'{t}.txt'}" for t in ("volcano", "bread", "light"))
    args = ["compare", base_dir, "--topics", ",".join(spec), "--topic-texts", texts, "--other", str(other)]
    r = CliRunner().invoke(app, [*args, "--layers", "0,1", "--skip-first", "--json", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    for key in ("topics", "k", "accuracy", "accuracy_ci", "chance", "predictions", "confusion", "layers"):
        assert key in h
    assert h["accuracy"] == 1.0 and h["k"] == 3 and h["layers"] == [0, 1] and h["skip_first"] is True
    assert (tmp_path / "run" / "identify.json").is_file() and (tmp_path / "run" / "report.html").is_file()
    r = CliRunner().invoke(app, ["compare", base_dir, str(tmp_path / "volcano"), "--topics", ",".join(spec)])
    assert r.exit_code == 2 and "either TUNED (one comparison) or --topics" in r.output
    r = CliRunner().invoke(app, ["compare", base_dir, "--topics", "volcano"])
    assert r.exit_code == 2 and "NAME=DIR" in r.output
    r = CliRunner().invoke(app, ["compare", base_dir])
    assert r.exit_code == 2 and "TUNED" in r.output
