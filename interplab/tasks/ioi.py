"""Indirect object identification (IOI), after Wang et al. (2022), "Interpretability in the Wild: a
Circuit for Indirect Object Identification in GPT-2 small".

The templates are the paper's BABA templates (its released code, ``ioi_dataset.py``); the ABBA form
swaps the first two names. In "When Mary and John went to the store, John gave a drink to", the
indirect object IO = Mary, the subject S = John (S1 its first mention, S2 its second), and the model
should prefer " Mary" over " John" at END. Names, places and objects are drawn with a seed; only
names that are one token (with their leading space) for the model's tokenizer are used, so clean and
corrupt prompts tokenize to the same length.

Corruption ``"abc"`` is the paper's p_ABC distribution: the same template and place/object with IO, S1
and S2 replaced by three *different* fresh names (so no name is repeated and the prompt carries no IO
information); ``"flip"`` swaps IO and S (the answer flips). Named positions: ``IO``, ``S1``,
``S1+1`` (the token after S1), ``S2``, ``END``. Metric: logit(IO) − logit(S) at END.
"""

from __future__ import annotations

import random
import re

from interplab.tasks.pairs import PairSpec, PromptPairs, build_pairs

BABA_TEMPLATES = [
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
]
PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station"]
OBJECTS = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"]
NAMES = [
    "Mary",
    "John",
    "Tom",
    "James",
    "Dan",
    "Sid",
    "Martin",
    "Amy",
    "Anna",
    "Paul",
    "Kate",
    "Mark",
    "Lisa",
    "David",
    "Sarah",
    "Michael",
    "Emma",
    "Peter",
    "Laura",
    "George",
    "Alice",
    "Bob",
    "Jack",
    "Rose",
    "Henry",
    "Lucy",
    "Sam",
    "Grace",
    "Ben",
    "Jane",
    "Chris",
    "Eric",
    "Ryan",
    "Adam",
    "Alex",
    "Steve",
    "Kevin",
    "Jason",
    "Brian",
    "Mike",
    "Joe",
    "Tim",
    "Max",
    "Ian",
    "Carl",
    "Bill",
    "Frank",
    "Jim",
    "Ruth",
    "Helen",
    "Julia",
    "Susan",
    "Linda",
    "Karen",
    "Nancy",
    "Emily",
    "Hannah",
    "Sophie",
    "Rachel",
    "Victoria",
    "Andrew",
    "Richard",
    "Thomas",
    "Daniel",
    "Robert",
]
POSITION_NAMES = ("IO", "S1", "S1+1", "S2", "END")


def single_token_names(model, names=NAMES) -> list[str]:
    """The names that are one token (with a leading space) for ``model``'s tokenizer."""
    tok = model.need_tokenizer()
    return [n for n in names if len(tok(" " + n, add_special_tokens=False)["input_ids"]) == 1]


def _segments(template: str, order: str, io: str, s: str, place: str, obj: str, s2: str | None = None):
    """Segments with named spans for one template. The template's first name slot ([B]) and its [A]
    slot hold S and IO (BABA) or IO and S (ABBA); the second [B] is S2 (``s2``, default ``s``); the
    final " [A]" is the answer and not part of the prompt."""
    t = template.replace("[PLACE]", place).replace("[OBJECT]", obj)
    t = t[: t.rindex("[A]")].rstrip()
    slot1, slot2 = ((s, "S1"), (io, "IO")) if order == "BABA" else ((io, "IO"), (s, "S1"))
    segs, n_b = [], 0
    for part in re.split(r"(\[A\]|\[B\])", t):
        if part == "[B]":
            n_b += 1
            segs.append(slot1 if n_b == 1 else (s2 or s, "S2"))
        elif part == "[A]":
            segs.append(slot2)
        elif part:
            segs.append((part, None))
    return segs


def ioi_specs(
    names: list[str], n: int = 50, seed: int = 0, corruption: str = "abc", orders=("ABBA", "BABA"), templates=None
) -> list[PairSpec]:
    """``n`` IOI pairs (text level), half ABBA and half BABA, templates cycled, names/places/objects seeded."""
    if corruption not in ("abc", "flip"):
        raise ValueError(f"corruption must be 'abc' (Wang et al.'s p_ABC) or 'flip', not {corruption!r}.")
    if len(names) < 5:
        raise ValueError(f"IOI needs at least 5 distinct single-token names, got {len(names)}.")
    templates = list(templates or BABA_TEMPLATES)
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        order = orders[i % len(orders)]
        template = templates[(i // len(orders)) % len(templates)]
        io, s, x, y, z = rng.sample(names, 5)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        clean = _segments(template, order, io, s, place, obj)
        if corruption == "abc":
            corrupt = _segments(template, order, x, y, place, obj, s2=z)
        else:
            corrupt = _segments(template, order, s, io, place, obj)
        specs.append(
            PairSpec(
                clean,
                corrupt,
                answer=" " + io,
                wrong=" " + s,
                meta={
                    "template": templates.index(template),
                    "order": order,
                    "io": io,
                    "s": s,
                    "place": place,
                    "object": obj,
                },
            )
        )
    return specs


def ioi(model, n: int = 50, seed: int = 0, corruption: str = "abc", names: list[str] | None = None) -> PromptPairs:
    """IOI prompt pairs for ``model`` (Wang et al. 2022): see the module docstring."""
    names = single_token_names(model, names or NAMES)
    pairs = build_pairs(model, ioi_specs(names, n=n, seed=seed, corruption=corruption), task="ioi", metric="logit_diff")
    pos = pairs.positions
    pairs.positions = {"IO": pos["IO"], "S1": pos["S1"], "S1+1": pos["S1"] + 1, "S2": pos["S2"], "END": pos["END"]}
    return pairs
