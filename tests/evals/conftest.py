"""A tiny Llama with a tokenizer and a chat template, registered with the interplab provider as ``interplab/tiny``."""

from __future__ import annotations

import pytest
from tiny_tokenized import make_tiny_tokenized_model

import interplab

CHAT_TEMPLATE = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}"
)
WORDS = ["Yes", "No", "okay", "not", "It is", "to", "isn't it", "is it", "True", "False", "Paris", "London", "Rome"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    return make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_eval"), extra_text=[" ".join(WORDS)])


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """The tiny model with a chat template, available to Inspect as ``interplab/tiny``."""
    from interplab.evals.provider import register_model

    m = interplab.load(tiny_dir)
    m.tokenizer.chat_template = CHAT_TEMPLATE
    register_model("tiny", m)
    return m
