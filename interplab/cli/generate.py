"""``interplab generate`` and ``interplab chat``: the model's text with and without interventions named on the
command line (a steering vector from a file or two contrast prompts, ablated heads; :mod:`interplab.steering`)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from interplab.cli._common import AsJson, ModelName, OutDir, err, finish_run, guard, load_model, print_json

STEER_HELP = 'Steering vector: FILE.safetensors or contrast prompts written "A"-"B" (e.g. \'"Love"-"Hate"\').'


def _prompt_tokens(model: Any, messages: list[dict[str, str]], chat: bool):
    """Token ids of the conversation: through the model's chat template when ``chat`` (and it has one), else the
    last message's text."""
    import torch

    tok = model.need_tokenizer()
    if chat and getattr(tok, "chat_template", None):
        return torch.tensor([tok(model.chat(messages), add_special_tokens=False)["input_ids"]])
    return model.to_tokens(messages[-1]["content"])


def _interventions(model: Any, steer: str | None, layer: int | None, scale: float, ablate: str | None):
    from interplab.steering import interventions_from_args

    if steer is not None and layer is None:
        raise ValueError("--steer needs --layer L: the residual stream (blocks.L.hook_resid_post) it is added to.")
    return interventions_from_args(
        model, {"steer": steer, "steer_layer": layer, "steer_scale": scale, "ablate": ablate}
    )


def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The prompt (a user message with --chat)."),
    model: ModelName = "smollm2-135m",
    steer: str | None = typer.Option(None, "--steer", help=STEER_HELP),
    layer: int | None = typer.Option(None, "--layer", help="With --steer: add it to blocks.L.hook_resid_post."),
    scale: float = typer.Option(1.0, "--scale", help="With --steer: the vector's multiplier."),
    ablate: str | None = typer.Option(None, "--ablate", help="Zero-ablate these heads: L.H,L.H (e.g. 3.1,5.0)."),
    max_new_tokens: int = typer.Option(40, "--max-new-tokens", help="Tokens to generate."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Use the model's chat template when it has one."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Greedy generation, side by side without and with the interventions; the steering vector's norm beside the
    residual stream's at its layer, so a vector that swamps the stream shows."""
    from interplab.io.runs import Run

    args = {"prompt": prompt, "model": model, "steer": steer, "layer": layer, "scale": scale, "ablate": ablate}
    with guard(), Run("generate", {**args, "max_new_tokens": max_new_tokens, "chat": chat}, out=out) as run:
        m = load_model(model)
        ivs = _interventions(m, steer, layer, scale, ablate)
        tokens = _prompt_tokens(m, [{"role": "user", "content": prompt}], chat)
        h: dict[str, Any] = {"model": m.name, "prompt": prompt}
        with err.status("generating …"):
            h["baseline"] = m.generate(tokens, max_new_tokens=max_new_tokens)
            if ivs:
                h["intervened"] = m.generate(tokens, max_new_tokens=max_new_tokens, interventions=ivs)
        if steer is not None:
            from interplab.hooks import AddVector
            from interplab.steering import steering_norms

            v = next(iv for iv in ivs if isinstance(iv, AddVector))
            assert v.vector is not None
            h["steering"] = steering_norms(m, v.vector, scale, v.hook, prompt)
            if h["steering"]["ratio"] > 1:
                h["warning"] = (
                    f"the steering vector's norm is {h['steering']['ratio']}x the residual stream's at layer {layer}: "
                    "it swamps the stream (try a smaller --scale)."
                )
        if ablate:
            h["ablated_heads"] = ablate
        run.save_json("generations.json", h)
        finish_run(run, h)
    if as_json:
        print_json(run.headline)
        return
    err.print(f"[bold]baseline[/]: {h['baseline']}")
    if "intervened" in h:
        err.print(f"[bold]with interventions[/]: {h['intervened']}")
    if "steering" in h:
        s = h["steering"]
        err.print(f"steering vector norm {s['vector_norm']} vs residual norm {s['resid_norm']} (ratio {s['ratio']})")
    if "warning" in h:
        err.print(f"[yellow]{h['warning']}[/]")


def chat(
    model: ModelName = "smollm2-135m",
    steer: str | None = typer.Option(None, "--steer", help=STEER_HELP),
    layer: int | None = typer.Option(None, "--layer", help="With --steer: add it to blocks.L.hook_resid_post."),
    scale: float = typer.Option(1.0, "--scale", help="With --steer: the vector's multiplier."),
    ablate: str | None = typer.Option(None, "--ablate", help="Zero-ablate these heads: L.H,L.H."),
    max_new_tokens: int = typer.Option(60, "--max-new-tokens", help="Tokens per reply."),
    show_baseline: bool = typer.Option(False, "--show-baseline", help="Also print the reply without interventions."),
) -> None:
    """A conversation on stdin (one message per line; an empty line or /quit ends it) with the interventions
    applied to every reply; the conversation is kept as the context of the next turn."""
    with guard():
        m = load_model(model)
        ivs = _interventions(m, steer, layer, scale, ablate)
        messages: list[dict[str, str]] = []
        err.print("[dim]one message per line; an empty line or /quit ends the chat[/]")
        for line in sys.stdin:
            text = line.rstrip("\n")
            if not text.strip() or text.strip() == "/quit":
                break
            messages.append({"role": "user", "content": text})
            tokens = _prompt_tokens(m, messages, chat=True)
            reply = str(m.generate(tokens, max_new_tokens=max_new_tokens, interventions=ivs)).strip()
            if show_baseline and ivs:
                base = str(m.generate(tokens, max_new_tokens=max_new_tokens)).strip()
                typer.echo(f"baseline> {base}")
            typer.echo(f"model> {reply}")
            messages.append({"role": "assistant", "content": reply})
