"""The interplab provider for Inspect: greedy batched generation equal to Model.generate, offline token counts,
interventions from model args equal to the hook mechanism's, clear errors for bad args."""

from __future__ import annotations

import asyncio

import pytest
import torch
from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.solver import generate

from interplab.evals.provider import InterplabAPI, parse_interventions
from interplab.hooks import Ablate, AddVector

PROMPTS = ["The Eiffel Tower is", "When Mary and John went", "Paris", "The quick brown fox jumps over the lazy dog."]


def test_batched_greedy_generation_equals_model_generate_prompt_by_prompt(tiny, tmp_path):
    ds = MemoryDataset([Sample(input=p, id=i) for i, p in enumerate(PROMPTS)])
    (log,) = inspect_eval(
        Task(dataset=ds, solver=generate()),
        model="interplab/tiny",
        model_args={"batch_size": 4},
        max_tokens=6,
        log_dir=str(tmp_path),
        display="none",
    )
    assert log.status == "success" and log.samples
    api = InterplabAPI("tiny")
    for s in log.samples:
        prompt = api.prompt_text(PROMPTS[int(s.id)])
        ids = tiny.to_tokens(prompt, prepend_bos=False)
        want = tiny.generate(ids, max_new_tokens=6).split("<|endoftext|>")[0]
        assert s.output.completion == want


def test_count_text_tokens_uses_the_models_tokenizer_offline(tiny):
    api = InterplabAPI("tiny")
    text = "The Eiffel Tower is located in the city of Paris."
    n = asyncio.run(api.count_text_tokens(text))
    assert n == len(tiny.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_model_info_is_registered_so_inspect_never_looks_the_name_up(tiny):
    from inspect_ai.model._model_info import get_model_info

    InterplabAPI("tiny")
    info = get_model_info("interplab/tiny")
    assert info is not None and info.context_length == tiny.cfg.n_ctx


def _logliks(api: InterplabAPI, ctx: str, conts: list[str]) -> list[float]:
    return asyncio.run(api.loglikelihood(ctx, conts))


def test_steer_and_ablate_args_act_through_the_hook_mechanism(tiny, tmp_path):
    from safetensors.torch import save_file

    vec = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(0))
    f = tmp_path / "v.safetensors"
    save_file({"v": vec}, str(f))
    ctx, conts = "The Eiffel Tower is located in the city of", [" Paris", " London Rome"]
    plain = _logliks(InterplabAPI("tiny"), ctx, conts)
    steered_api = InterplabAPI("tiny", steer=str(f), steer_layer=1, steer_scale=3.0, ablate="0.1,1.2")
    steered = _logliks(steered_api, ctx, conts)
    assert steered != pytest.approx(plain, abs=1e-3)

    # the same interventions by hand, on full rows: ctx + continuation
    ivs = [
        AddVector("blocks.1.hook_resid_post", vector=vec, scale=3.0),
        Ablate("blocks.0.attn.hook_z", heads=[1]),
        Ablate("blocks.1.attn.hook_z", heads=[2]),
    ]
    for c, got in zip(conts, steered, strict=True):
        ctx_ids = tiny.tokenizer(ctx, add_special_tokens=False)["input_ids"]
        whole = tiny.tokenizer(ctx + c, add_special_tokens=False)["input_ids"]
        logits = tiny.run(torch.tensor([whole]), interventions=ivs).logits[0].log_softmax(-1)
        want = sum(float(logits[i - 1, whole[i]]) for i in range(len(ctx_ids), len(whole)))
        assert got == pytest.approx(want, abs=1e-4)


def test_bad_model_args_are_clear_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown model arg"):
        InterplabAPI("tiny", stear="x")
    with pytest.raises(ValueError, match="L.H"):
        parse_interventions(tiny, {"ablate": "3"})
    with pytest.raises(ValueError, match="does not exist"):
        parse_interventions(tiny, {"ablate": "9.0"})
    with pytest.raises(FileNotFoundError):
        parse_interventions(tiny, {"steer": str(tmp_path / "none.safetensors"), "steer_layer": 0})
    from safetensors.torch import save_file

    f = tmp_path / "bad.safetensors"
    save_file({"v": torch.zeros(7)}, str(f))
    with pytest.raises(ValueError, match="shape"):
        parse_interventions(tiny, {"steer": str(f), "steer_layer": 0})
    save_file({"v": torch.zeros(tiny.cfg.d_model)}, str(f))
    with pytest.raises(ValueError, match="steer_layer"):
        parse_interventions(tiny, {"steer": str(f)})
    with pytest.raises(ValueError, match="outside"):
        parse_interventions(tiny, {"steer": str(f), "steer_layer": 99})


def test_generation_with_a_shared_prompt_prefix_gives_the_same_greedy_answers(tiny, tmp_path, monkeypatch):
    """Prompts opening with the same system turn: the prefix run once and its cache repeated over the batch gives
    the answers of plain left-padded batches and of Model.generate prompt by prompt."""
    from inspect_ai.model import ChatMessageSystem, ChatMessageUser

    from interplab.evals import provider

    system = "You are a careful assistant. Answer every question about Paris, London and Rome in a few words."
    turns = [[ChatMessageSystem(content=system), ChatMessageUser(content=p)] for p in PROMPTS]
    ds = MemoryDataset([Sample(input=t, id=i) for i, t in enumerate(turns)])
    api = InterplabAPI("tiny")
    prompts = [api.prompt_text(t) for t in turns]
    ids = [tiny.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = next(i for i in range(min(map(len, ids))) if len({x[i] for x in ids}) > 1)
    assert shared >= provider.MIN_SHARED_PREFIX and tiny.cfg.family != "toy"  # the prefix path runs

    def answers(sub: str) -> dict[int, str]:
        (log,) = inspect_eval(
            Task(dataset=ds, solver=generate()),
            model="interplab/tiny",
            model_args={"batch_size": 4},
            max_tokens=8,
            log_dir=str(tmp_path / sub),
            display="none",
        )
        assert log.status == "success" and log.samples
        return {int(s.id): s.output.completion for s in log.samples}

    with_prefix = answers("prefix")
    monkeypatch.setattr(provider, "MIN_SHARED_PREFIX", 10**6)
    assert answers("plain") == with_prefix
    for i, p in enumerate(prompts):
        want = tiny.generate(tiny.to_tokens(p, prepend_bos=False), max_new_tokens=8).split("<|endoftext|>")[0]
        assert with_prefix[i] == want
