"""Tiny random-weight models of every supported family, written to local directories by the tests."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

import interplab

torch.set_num_threads(min(2, torch.get_num_threads()))

FAMILIES = [
    "llama",
    "qwen2",
    "mistral",
    "gemma3",
    "gpt2",
    "gpt_neox",
    "gpt_neox_seq",
    "opt",
    "gpt_neo",
    "toy",
    "toy_attn_only",
]


def _hf_config(family: str) -> tuple[Any, Any]:
    """(config, model class) of a tiny random model of ``family`` (HF classes differ per family: ``Any``)."""
    import transformers as T

    common: dict[str, Any] = {
        "vocab_size": 97,
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "max_position_embeddings": 64,
    }
    if family == "llama":
        return T.LlamaConfig(num_key_value_heads=2, **common), T.LlamaForCausalLM
    if family == "qwen2":
        return T.Qwen2Config(num_key_value_heads=2, **common), T.Qwen2ForCausalLM
    if family == "mistral":
        return T.MistralConfig(num_key_value_heads=1, sliding_window=None, **common), T.MistralForCausalLM
    if family == "gemma3":
        cfg = T.Gemma3TextConfig(
            num_key_value_heads=2,
            head_dim=8,
            sliding_window=6,
            query_pre_attn_scalar=8,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            **common,
        )
        return cfg, T.Gemma3ForCausalLM
    if family == "gpt2":
        return T.GPT2Config(
            vocab_size=97, bos_token_id=0, eos_token_id=0, n_embd=32, n_layer=3, n_head=4, n_positions=64, n_inner=48
        ), T.GPT2LMHeadModel
    if family in ("gpt_neox", "gpt_neox_seq"):
        partial: dict[str, Any] = {"rotary_pct": 0.5}  # not a named parameter any more: read from **kwargs
        cfg = T.GPTNeoXConfig(use_parallel_residual=family == "gpt_neox", **partial, **common)
        return cfg, T.GPTNeoXForCausalLM
    if family == "opt":
        return T.OPTConfig(
            vocab_size=97,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            ffn_dim=48,
            max_position_embeddings=64,
            do_layer_norm_before=True,
        ), T.OPTForCausalLM
    if family == "gpt_neo":  # a global layer, then two local ones with a window shorter than the test prompts
        return T.GPTNeoConfig(
            vocab_size=97,
            bos_token_id=0,
            eos_token_id=0,
            hidden_size=32,
            num_layers=3,
            num_heads=4,
            intermediate_size=48,
            max_position_embeddings=64,
            window_size=4,
            attention_types=[[["global", "local"], 1], [["local"], 1]],
        ), T.GPTNeoForCausalLM
    raise KeyError(family)


def make_model_dir(family: str, directory) -> str:
    torch.manual_seed(0)
    if family.startswith("toy"):
        cfg = interplab.ToyConfig(
            n_layers=3,
            d_model=32,
            n_heads=4,
            d_head=8,
            d_mlp=0 if family == "toy_attn_only" else 48,
            d_vocab=97,
            n_ctx=64,
            normalization="LN" if family == "toy" else None,
        )
        model = interplab.ToyTransformer(cfg)
        with torch.no_grad():  # non-trivial biases and norm weights
            for p in model.parameters():
                if p.ndim == 1:
                    p.add_(torch.randn_like(p) * 0.1)
    else:
        cfg, cls = _hf_config(family)
        model = cls(cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim == 1:  # make biases and norm weights non-trivial so bugs show
                    p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(directory))
    return str(directory)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    return {f: make_model_dir(f, tmp_path_factory.mktemp(f)) for f in FAMILIES}


@pytest.fixture(scope="session", params=FAMILIES)
def tiny(request, tiny_dirs):
    return interplab.load(tiny_dirs[request.param])


@pytest.fixture(scope="session")
def tiny_tok_dir(tmp_path_factory):
    """A tiny random-weight Llama with a tokenizer (:func:`tiny_tokenized.make_tiny_tokenized_model`)."""
    from tiny_tokenized import make_tiny_tokenized_model

    return make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_tok"))


@pytest.fixture
def one_thread():
    """One torch thread for the test (small ops: much faster on a shared machine); the count is restored after.
    Not autouse: a module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    from interplab.runtime import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def smollm2():
    return interplab.load("smollm2-135m")


def pytest_report_header(config):
    cache = os.environ.get("INTERPLAB_CACHE", "~/.cache/interplab")
    return f"torch {torch.__version__}, threads {torch.get_num_threads()}, INTERPLAB_CACHE={cache}"


@pytest.fixture(scope="session", autouse=True)
def _cwd_in_tmp(tmp_path_factory):
    """The whole session runs in a temporary working directory, so a command without ``--out`` writes its run
    directory (``runs/<timestamp>-<command>``, relative to the working directory) there and never into the
    checkout. Session-scoped, so module- and session-scoped fixtures run there too; a directory apart from
    ``tmp_path``, whose contents some tests list."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(scope="session")
def report_model(tmp_path_factory):
    """The tiny tokenized Llama the report tests build their pages from."""
    from tiny_tokenized import make_tiny_tokenized_model, task_text

    return interplab.load(
        make_tiny_tokenized_model(
            tmp_path_factory.mktemp("tiny_tokenized_report"), vocab_size=1200, extra_text=task_text()
        )
    )


@pytest.fixture(scope="module")
def report_dir(report_model, tmp_path_factory):
    """A report with the core sections only, on the XSS and Eiffel Tower prompts."""
    from tiny_tokenized import XSS_PROMPTS

    from interplab.report import build_report

    out = tmp_path_factory.mktemp("report")
    build_report(report_model, out, prompts=XSS_PROMPTS, sections=())
    return out
