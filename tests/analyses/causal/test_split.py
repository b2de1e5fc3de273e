"""Head ablation and activation patching split over worker processes (:mod:`interplab.sweeps.split`): each
worker loads the model from its directory and computes its layers with the serial run's batches, so the split
run equals the serial one exactly."""

from __future__ import annotations

import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model, task_text

import interplab
from interplab.analyses.causal import activation_patching
from interplab.analyses.causal.ablation import head_ablation_importance
from interplab.sweeps.split import deal, model_reference
from interplab.tasks import get_task


@pytest.fixture(scope="module")
def tm(tmp_path_factory):
    return interplab.load(
        make_tiny_tokenized_model(
            tmp_path_factory.mktemp("tiny_tok_split"), vocab_size=1200, n_layers=3, extra_text=task_text()
        )
    )


def test_deal_gives_each_worker_a_share_and_never_an_empty_one():
    assert deal([0, 1, 2, 3, 4], 2) == [[0, 2, 4], [1, 3]]
    assert deal([7], 4) == [[7]]
    assert deal([], 3) == []


def test_a_model_without_a_source_cannot_go_to_workers(tm):
    from interplab.models.model import from_hf

    assert model_reference(tm) == str(tm.source)
    assert model_reference(tm, "smollm2-135m") == "smollm2-135m"
    with pytest.raises(ValueError, match="save it to a directory"):
        model_reference(from_hf(tm.hf, tm.tokenizer, name="in-memory"))


@pytest.mark.parametrize("how", ["zero", "resample"])
def test_head_ablation_split_over_processes_equals_the_serial_run(tm, how):
    kw = {"n_chunks": 4, "chunk_len": 16, "how": how, "induction_score": None, "seed": 3}
    serial = head_ablation_importance(tm, **kw)
    split = head_ablation_importance(tm, backend="process", max_parallel=2, **kw)
    assert torch.equal(split.per_chunk, serial.per_chunk)
    assert torch.equal(split.baseline_per_chunk, serial.baseline_per_chunk)
    assert torch.equal(split.delta_loss, serial.delta_loss)
    assert split.settings["backend"] == "process"
    with pytest.raises(ValueError, match="use one of serial, process, ray"):
        head_ablation_importance(tm, backend="spark", **kw)


@pytest.mark.parametrize("grid", ["heads", "resid"])
def test_activation_patching_split_over_processes_equals_the_serial_run(tm, grid):
    pairs = get_task(tm, "ioi", n=6)
    serial = activation_patching(tm, pairs, grid=grid, n_boot=50)
    split = activation_patching(tm, pairs, grid=grid, n_boot=50, backend="process", max_parallel=2)
    assert torch.equal(split.per_prompt, serial.per_prompt)
    assert torch.equal(torch.nan_to_num(split.values), torch.nan_to_num(serial.values))
    assert split.settings["backend"] == "process"


def test_ablate_command_with_process_workers_prints_the_serial_headline(tm, tmp_path):
    import json

    from typer.testing import CliRunner

    from interplab.cli import app

    base = ["ablate", "--model", str(tm.source), "--n-chunks", "4", "--chunk-len", "16", "--no-induction", "--json"]
    heads = {}
    for backend in ("serial", "process"):
        r = CliRunner().invoke(app, [*base, "--backend", backend, "--out", str(tmp_path / backend)])
        assert r.exit_code == 0, r.output
        heads[backend] = json.loads(r.stdout)["top_heads"]
    assert heads["process"] == heads["serial"]
