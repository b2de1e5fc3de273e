"""System prompts on chat templates without a system role (Gemma's): the instruction reaches the prompt exactly once,
at the start of the first user turn; a template with a system role renders it as it is; a model without a template
gets role lines after its BOS token."""

from __future__ import annotations

import copy

import pytest
from inspect_ai.model import ChatMessageSystem, ChatMessageUser

from interplab.evals.provider import InterplabAPI, chat_prompt, fold_system

INSTRUCTION = "You are a friendly and truthful assistant."
QUESTION = "The Moon orbits the Earth. Is that right?"

# Gemma 2's template: refuses a system turn
REFUSES = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
# a template that renders user and assistant turns only: the system turn would vanish
DROPS = (
    "{% for m in messages %}{% if m['role'] != 'system' %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# a template with a system role
HAS_SYSTEM = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture
def tok(tiny):
    return copy.deepcopy(tiny.tokenizer)


def _msgs(system: str | None = INSTRUCTION) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": QUESTION}
    ]


@pytest.mark.parametrize("template", [REFUSES, DROPS])
def test_a_system_less_template_gets_the_instruction_once_at_the_start_of_the_first_user_turn(tok, template):
    tok.chat_template = template
    text = chat_prompt(tok, _msgs())
    assert text.count(INSTRUCTION) == 1
    assert f"{INSTRUCTION}\n\n{QUESTION}" in text  # Gemma's convention: system, blank line, user
    assert text == chat_prompt(tok, [{"role": "user", "content": f"{INSTRUCTION}\n\n{QUESTION}"}])
    assert chat_prompt(tok, _msgs(None)).count(QUESTION) == 1  # no system turn: the template as it is


def test_a_template_with_a_system_role_renders_it_unchanged(tok):
    tok.chat_template = HAS_SYSTEM
    text = chat_prompt(tok, _msgs())
    assert text == f"<|system|>{INSTRUCTION}\n<|user|>{QUESTION}\n<|assistant|>"


def test_the_providers_prompt_for_inspect_messages_folds_the_system_turn(tiny):
    api = InterplabAPI("tiny")
    saved = tiny.tokenizer.chat_template
    try:
        tiny.tokenizer.chat_template = REFUSES
        text = api.prompt_text([ChatMessageSystem(content=INSTRUCTION), ChatMessageUser(content=QUESTION)])
    finally:
        tiny.tokenizer.chat_template = saved
    assert text.count(INSTRUCTION) == 1
    assert text.startswith(f"<start_of_turn>user\n{INSTRUCTION}\n\n{QUESTION}<end_of_turn>\n")


def test_fold_system_without_a_user_turn_makes_the_instruction_one(tok):
    assert fold_system([{"role": "system", "content": INSTRUCTION}]) == [{"role": "user", "content": INSTRUCTION}]
    assert fold_system(_msgs("")) == _msgs(None)


def test_no_template_gives_role_lines_after_the_bos_token_the_tokenizer_adds(tok):
    tok.chat_template = None
    plain = chat_prompt(tok, _msgs())
    assert plain == f"system: {INSTRUCTION}\nuser: {QUESTION}\nassistant:"  # GPT-2-style tokenizer: no BOS added
    tok.bos_token = "<|endoftext|>"
    tok.add_bos_token = True  # a Llama/Gemma-style tokenizer that prepends BOS by default
    if tok("a")["input_ids"][0] != tok.bos_token_id:
        pytest.skip("this tokenizer class cannot be switched to adding BOS")
    assert chat_prompt(tok, _msgs()) == "<|endoftext|>" + plain
