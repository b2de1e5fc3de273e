"""``interplab report --sections finetune,invert,organisms [--runs DIR ...]``: the model report shows the results of
other commands found in the model directory (a fine-tune's loss curves, an organism's card) and in the run
directories given (a compare run's verdict, an invert run's guesses, a detector benchmark's ROC curves), through the
one registry of run kinds; every way of asking for a section with nothing to show is refused before the model
loads, with what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_tokenized import SENTENCES, XSS_TOKEN, make_tiny_tokenized_model
from typer.testing import CliRunner

import interplab
from interplab.cli import app
from interplab.io.runs import Run
from interplab.report.model_report import EXTRA_SECTIONS, build_report, plan_report
from interplab.report.runs import RUN_KINDS, SECTION_NEEDS, find_runs, read_run

runner = CliRunner()


def _invoke(*args: str):
    r = runner.invoke(app, list(args))
    return r, " ".join(r.output.split())


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[str, Path, Path]:
    """(base directory, fine-tuned model directory, its data): a tiny tokenized Llama and a 4-step LoRA fine-tune of
    it, written as `interplab finetune --out` writes it (run.json, finetune_result.json, merged weights)."""
    from interplab.finetune import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("ft")
    base = make_tiny_tokenized_model(root / "base")
    data = root / "narrow.txt"
    data.write_text((" ".join(SENTENCES) + " ") * 30)
    cfg = FinetuneConfig(
        targets=("q_proj", "v_proj"), rank=2, alpha=4, steps=4, batch_size=4, seq_len=16, lr=2e-2, log_every=2,
        ckpt_every=4, heldout_fraction=0.2, threads=1,
    )  # fmt: skip
    with Run("finetune", {"model": base}, out=root / "tuned") as run:
        finetune(base, data, cfg, out=run.dir, progress=False)
    return base, root / "tuned", data


@pytest.fixture(scope="module")
def compare_run(tuned, tmp_path_factory) -> Path:
    from interplab.finetune.compare import compare_models

    base, tuned_dir, data = tuned
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    with Run("compare", {"base": base, "tuned": str(tuned_dir), "top": 5}, out=out) as run:
        res = compare_models(
            interplab.load(base), interplab.load(tuned_dir), n_chunks=2, chunk_len=16, detector_seqs=2,
            ablation_chunks=2, ioi="never", circuit=False, data=str(data),
        )  # fmt: skip
        res.base_name, res.tuned_name = base, str(tuned_dir)
        res.save(run.dir)
    return out


@pytest.fixture(scope="module")
def invert_run(tmp_path_factory) -> Path:
    """An invert run whose guesses hold a ``<script>`` token (the result as `interplab invert` saves it)."""
    from interplab.finetune.invert import InversionResult

    run = {
        "name": "L1-all-all", "layer": 1, "dims": "all", "n_dims": 32, "dims_fraction": 1.0, "positions": "all",
        "exact_token_recovery": 0.5, "exact_token_recovery_ci": [0.2, 0.8], "sequence_exact_match": 0.0,
        "token_f1": 0.5, "best_of_k_token_recovery": 1.0, "best_of_k_sequence_exact_match": 1.0, "oov_rate": 0.0,
        "curve": [{"step": 0, "test_loss": 3.0}, {"step": 1, "test_loss": 2.5}],
    }  # fmt: skip
    layer0 = {**run, "name": "L0-all-all", "layer": 0, "exact_token_recovery": 0.9}
    ex = {
        "run": "L1-all-all",
        "original": [XSS_TOKEN, " a\n"],
        "original_ids": [1, 2],
        "guesses": [[XSS_TOKEN, "b"], [XSS_TOKEN, " a\n"]],
        "guess_ids": [[1, 3], [1, 2]],
    }
    res = InversionResult(
        "tiny", 2, 32, 2, "L1-all-all", [layer0, run], [ex], None,
        {"k": 2, "n_layers": 1, "d_model": 8, "steps": 1, "n_train": 4},
    )  # fmt: skip
    out = tmp_path_factory.mktemp("inv") / "inv"
    with Run("invert", {"model": "tiny", "layer": 1}, out=out) as r:
        res.save(r.dir)
    return out


@pytest.fixture(scope="module")
def organism(tmp_path_factory) -> Path:
    """A toy backdoored organism (5 training steps: the card, not the backdoor, is under test)."""
    from interplab.organisms.toy import ToyRecipe, train_toy_organism

    task = ToyRecipe().task
    d = tmp_path_factory.mktemp("org") / "bd"
    recipe = ToyRecipe(seed=1, steps=5, trigger=(task.token_id("r3"),), target=task.token_id("c5"))
    with Run("organism-make-toy", {"kind": "toy"}, out=d) as run:
        train_toy_organism(recipe, run.dir)
    return d


def _bench_result() -> dict:
    """A detector benchmark in the form :func:`interplab.organisms.bench.bench` returns (two detectors, four
    models: its ROC curves and scores are what the report draws)."""
    from interplab.organisms.bench import roc_curve

    labels = torch.tensor([0, 0, 1, 1]).numpy()
    dets = {}
    for name, s in {"inversion": [0.1, 0.2, 0.9, 0.8], "spectral": [0.3, 0.5, 0.4, 0.6]}.items():
        scores = torch.tensor(s, dtype=torch.float64).numpy()
        fpr, tpr = roc_curve(scores, labels)
        dets[name] = {
            "roc_auc": 1.0 if name == "inversion" else 0.75,
            "roc_auc_ci95": [0.5, 1.0],
            "ce": 0.4,
            "seconds_per_model": 0.1,
            "roc": {"fpr": fpr, "tpr": tpr},
            "scores": {"clean": s[:2], "backdoored": s[2:]},
        }
    return {
        "n_models": 4,
        "n_backdoored": 2,
        "detectors": dets,
        "trigger_recovery_rate": 0.5,
        "target_recovery_rate": 1.0,
        "calibration": "leave-one-out cross-fit",
    }


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "bench"
    with Run("organism-bench", {"population": "pop"}, out=out) as run:
        run.save_json("bench.json", _bench_result())
    return out


# ------------------------------------------------------------------------------------ the sections


def test_finetune_section_shows_the_loss_curves_and_the_compare_verdict(tuned, compare_run, tmp_path):
    _, tuned_dir, _ = tuned
    out = tmp_path / "r"
    r, msg = _invoke(
        "report", "--model", str(tuned_dir), "--sections", "finetune", "--runs", str(compare_run), "--prompt", "a b",
        "--out", str(out), "--json",
    )  # fmt: skip
    assert r.exit_code == 0, msg
    head = json.loads(r.stdout)
    assert head["sections"] == ["finetune"]
    assert [x["kind"] for x in head["runs"]] == ["finetune", "compare"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<section class="ipl-section" id="finetune">' in page
    finetune = page[page.index('id="finetune"') :]
    assert "Loss curves" in finetune and "held-out loss" in finetune and "training loss (that step)" in finetune
    verdict = json.loads((compare_run / "compare.json").read_text())["verdict"]
    assert f"Verdict: {verdict}" in finetune and "Base vs fine-tuned" in finetune
    assert finetune.count('class="ipl-figure"') >= 2  # the loss curves and the comparison's figure
    for sid in ("heads", "weights", "dla", "logit-pca"):  # the default analyses did not run
        assert f'id="{sid}"' not in page


def test_a_finetuned_model_gets_its_section_by_default(tuned, report_model, tmp_path):
    _, tuned_dir, _ = tuned
    sections, found = plan_report(None, (), tuned_dir)
    assert sections[-1] == "finetune" and [r.kind for r in found] == ["finetune"]
    sections, found = plan_report(None, (), report_model.source)  # a plain model: the defaults alone
    assert "finetune" not in sections and not found


def test_invert_section_shows_curves_and_escaped_guesses(report_model, invert_run, tmp_path):
    path = build_report(report_model, tmp_path, prompts=["a b"], sections=["invert"], runs=[invert_run])
    page = path.read_text(encoding="utf-8")
    inv = page[page.index('<section class="ipl-section" id="invert">') :]
    assert "Recovery vs layer" in inv and "Guesses side by side with the original" in inv
    assert "ipl-guesses" in inv and inv.count('class="ipl-tok"') == 6
    assert XSS_TOKEN not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in inv


def test_the_standalone_invert_page_renders_the_same_parts(invert_run):
    from interplab.finetune.invert import InversionResult
    from interplab.report.sections.invert import invert_parts, invert_report

    res = InversionResult.load(invert_run)
    page = invert_report(res).to_html()
    assert '<section class="ipl-section" id="guesses">' in page
    assert page.count('class="ipl-tok"') == "".join(invert_parts(res)).count('class="ipl-tok"') == 6


def test_organisms_section_shows_the_card_and_the_roc_curves(organism, bench_run, tmp_path):
    """A toy organism has no tokenizer: the report holds its card and the runs, without the text sections."""
    out = tmp_path / "r"
    r, msg = _invoke("report", "--model", str(organism), "--sections", "organisms", "--runs", str(bench_run),
                     "--out", str(out), "--json")  # fmt: skip
    assert r.exit_code == 0, msg
    page = (out / "report.html").read_text(encoding="utf-8")
    org = page[page.index('<section class="ipl-section" id="organisms">') :]
    assert "toy-backdoor" in org and "r3" in org and "attack success" in org  # the card
    assert "ROC curves over the population" in org and "inversion (AUC 1.000)" in org
    assert "no tokenizer" in page and 'id="logit-lens"' not in page


def test_a_population_run_shows_every_members_card(tmp_path):
    from interplab.organisms.population import make_population
    from interplab.organisms.toy import ToyRecipe

    pop = tmp_path / "pop"
    with Run("organism-make-toy-population", {"kind": "toy-population"}, out=pop):
        make_population(pop, 1, 1, recipe=ToyRecipe(steps=2))
    from interplab.report.runs import run_parts

    html = "".join(run_parts("organisms", find_runs([pop])))
    assert "clean-000" in html and "backdoor-000" in html and "1 clean and 1 backdoored" in html


def test_an_eval_run_given_is_shown_instead_of_running_an_eval(report_model, tmp_path, monkeypatch):
    import interplab.evals.run as evals_run

    def no_eval(*a, **k):
        raise AssertionError("the evals section ran an eval although an eval run was given")

    monkeypatch.setattr(evals_run, "run_eval", no_eval)
    res = {"task": "framing", "models": {"tuned-xyz": {"effect": 0.125, "ci95": [0.05, 0.2], "n": 24}}}
    with Run("eval", {"task": "framing"}, out=tmp_path / "ev") as run:
        run.save_json("evals_framing.json", res)
    path = build_report(report_model, tmp_path / "r", prompts=["a b"], sections=["evals"], runs=[tmp_path / "ev"])
    page = path.read_text(encoding="utf-8")
    ev = page[page.index('<section class="ipl-section" id="evals">') :]
    assert "tuned-xyz" in ev and "Framing effect" in ev


# ------------------------------------------------------------------------------------ bad input


def test_each_run_section_without_results_is_refused_before_the_model_loads(report_model, tmp_path, monkeypatch):
    import interplab.cli.report as cli_report

    def no_load(name):
        raise AssertionError("the model was loaded before the sections were checked")

    monkeypatch.setattr(cli_report, "load_model", no_load)
    model = str(report_model.source)
    for section, needs in (("finetune", "not a fine-tuned model"), ("invert", "needs an inversion run"),
                           ("organisms", "not an organism")):  # fmt: skip
        r, msg = _invoke("report", "--model", model, "--sections", section, "--out", str(tmp_path / section))
        assert r.exit_code == 2 and needs in msg and "--runs DIR" in msg, msg
    assert set(SECTION_NEEDS) == {"finetune", "invert", "organisms"} <= set(EXTRA_SECTIONS)


def test_runs_that_are_not_runs_or_not_shown_are_refused(report_model, invert_run, tmp_path):
    model = str(report_model.source)
    (tmp_path / "empty").mkdir()
    with Run("heads", {}, out=tmp_path / "heads"):
        pass
    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError), Run("compare", {}, out=failed):
        raise RuntimeError("killed")
    (tmp_path / "file.json").write_text("{}")
    cases = {
        tmp_path / "nothing": "does not exist",
        tmp_path / "file.json": "is a file",
        tmp_path / "empty": "not a run directory",
        tmp_path / "heads": "a 'heads' run, which the report does not show",
        failed: "not complete (status 'failed': RuntimeError: killed)",
    }
    for d, message in cases.items():
        r, msg = _invoke("report", "--model", model, "--sections", "invert", "--runs", str(d), "--out", str(tmp_path))
        assert r.exit_code == 2 and message in msg, msg
    r, msg = _invoke("report", "--model", model, "--sections", "dla", "--runs", str(invert_run), "--out", str(tmp_path))
    assert r.exit_code == 2 and "not in --sections dla; add it (--sections dla,invert)" in msg, msg
    with pytest.raises(ValueError, match="has no compare.json"):
        with Run("compare", {}, out=tmp_path / "half"):
            pass
        read_run(tmp_path / "half")


def test_a_finetuned_adapter_whose_base_is_gone_is_refused_saying_which_base(tuned, tmp_path):
    """The adapter directory holds finetune_result.json, so the section has something to show; loading it names the
    missing base and how to fix it."""
    import shutil

    from interplab.finetune import FinetuneConfig, finetune

    base_dir, _, data = tuned
    base = tmp_path / "base"
    shutil.copytree(base_dir, base)
    cfg = FinetuneConfig(targets=("q_proj",), rank=2, alpha=4, steps=1, batch_size=2, seq_len=8, save="adapter",
                         log_every=1, ckpt_every=1, threads=1)  # fmt: skip
    finetune(str(base), data, cfg, out=tmp_path / "adapter", progress=False)
    shutil.rmtree(base)
    r, msg = _invoke("report", "--model", str(tmp_path / "adapter"), "--sections", "finetune", "--out", str(tmp_path))
    assert r.exit_code == 2 and "LoRA adapter for the base model" in msg and "point 'base' in" in msg, msg


def test_a_model_without_tokenizer_still_needs_one_for_the_text_sections(organism, tmp_path):
    m = interplab.load(organism)
    with pytest.raises(ValueError, match="needs a model with a tokenizer"):
        build_report(m, tmp_path, sections=["dla"])
    with pytest.raises(ValueError, match="needs a model with a tokenizer"):
        build_report(m, tmp_path, sections=["organisms", "heads"])


def test_every_run_kind_names_a_report_section():
    assert all(k.section in EXTRA_SECTIONS for k in RUN_KINDS.values())
