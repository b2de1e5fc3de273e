"""Small tasks from the research-ideas list ("deconstruct new tasks like IOI"), each as clean/corrupt
pairs with an answer, a competing answer, named positions and a logit-difference metric.

* ``pronouns``: "Mary went to the store because" → " she" (vs " he"); the corrupt prompt names a
  person of the other gender, so the answer flips. Named: ``NAME``, ``END``.
* ``capitalisation``: after a full stop the next word is capitalised — "It rained all day. the"
  ... scored at the token after the stop: clean "… day." → " The" vs " the"; corrupt replaces the
  stop by a comma ("… day," → " the"). Named: ``PUNCT``, ``END``.
* ``acronyms``: three-letter acronyms (García-Carrasco et al. 2024, "How does GPT-2 predict
  acronyms?"): "The Central Intelligence Agency (CIA). The National Health Service (N" → "H"
  vs the corrupt prompt's letter, where the corrupt prompt changes the second word. Only
  words whose capital first letter is a single token after the acronym prefix are used. Named:
  ``W1``, ``W2``, ``W3``, ``END``.
"""

from __future__ import annotations

import random

from interplab.tasks.pairs import PairSpec, PromptPairs, Segments, build_pairs

_MALE = ["John", "Tom", "James", "David", "Michael", "Peter", "George", "Paul", "Mark", "Jack", "Henry", "Sam"]
_FEMALE = ["Mary", "Anna", "Kate", "Lisa", "Sarah", "Emma", "Laura", "Alice", "Rose", "Lucy", "Jane", "Grace"]
_PRONOUN_TEMPLATES = [
    "{} went to the store because",
    "{} was tired, so",
    "{} called the doctor and said that",
    "When {} got home,",
    "{} could not sleep because",
    "{} opened the letter and",
]


def pronoun_specs(n: int = 48, seed: int = 0) -> list[PairSpec]:
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        t = _PRONOUN_TEMPLATES[i % len(_PRONOUN_TEMPLATES)]
        male = i % 2 == 0
        a, b = rng.choice(_MALE), rng.choice(_FEMALE)
        name, other = (a, b) if male else (b, a)
        pre, post = t.split("{}")
        mk = lambda nm, pre=pre, post=post: (
            [(pre, None), (nm, "NAME"), (post, None)] if pre else [(nm, "NAME"), (post, None)]
        )
        ans, wrong = (" he", " she") if male else (" she", " he")
        specs.append(
            PairSpec(mk(name), mk(other), answer=ans, wrong=wrong, meta={"template": i % len(_PRONOUN_TEMPLATES)})
        )
    return specs


_SENTENCES = [
    "It rained all day",
    "The cat slept on the mat",
    "We walked to the park",
    "She finished her work early",
    "The train was late again",
    "He bought some fresh bread",
    "The meeting ended at noon",
    "They painted the fence",
    "The children played outside",
    "I read the whole book",
    "The soup was too salty",
    "Our team won the game",
]


def capitalisation_specs(n: int = 24, seed: int = 0) -> list[PairSpec]:
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        s = _SENTENCES[i % len(_SENTENCES)]
        lead = rng.choice(_SENTENCES)
        clean = [(lead + ". " + s, None), (".", "PUNCT")]
        corrupt = [(lead + ". " + s, None), (",", "PUNCT")]
        specs.append(PairSpec(clean, corrupt, answer=" The", wrong=" the", meta={"sentence": s}))
    return specs


_WORDS = [
    "Central",
    "National",
    "American",
    "General",
    "Public",
    "Digital",
    "Global",
    "Royal",
    "Federal",
    "Modern",
    "Health",
    "Science",
    "Energy",
    "Security",
    "Research",
    "Trade",
    "Space",
    "Water",
    "Motor",
    "Power",
    "Agency",
    "Service",
    "Council",
    "Bureau",
    "Institute",
    "Society",
    "Union",
    "Company",
    "Office",
    "Board",
]


def acronym_specs(model, n: int = 40, seed: int = 0) -> list[PairSpec]:
    tok = model.need_tokenizer()
    # keep words whose capital letter is one token right after "(" + letters
    usable = [w for w in _WORDS if len(tok(w[0], add_special_tokens=False)["input_ids"]) == 1]
    letters = {}
    for w in usable:
        letters.setdefault(w[0], []).append(w)
    if len(letters) < 4:
        raise ValueError("acronyms: the tokenizer leaves fewer than 4 distinct single-token capital letters.")
    rng = random.Random(seed)
    example = " The Central Intelligence Agency (CIA)."
    specs = []
    for _ in range(n):
        w1, w2, w3 = rng.sample(usable, 3)
        alt = rng.choice([w for w in usable if w[0] not in (w2[0], w1[0], w3[0])])

        def segs(second: str, w1: str = w1, w3: str = w3) -> Segments:
            return [
                (example + " The ", None),
                (w1, "W1"),
                (" ", None),
                (second, "W2"),
                (" ", None),
                (w3, "W3"),
                (" (" + w1[0], None),
            ]

        specs.append(
            PairSpec(segs(w2), segs(alt), answer=w2[0], wrong=alt[0], meta={"words": [w1, w2, w3], "alt": alt})
        )
    return specs


def small_task(model, name: str, n: int = 40, seed: int = 0) -> PromptPairs:
    """Build one of the small tasks (``pronouns``, ``capitalisation``, ``acronyms``) for ``model``."""
    if name == "pronouns":
        specs = pronoun_specs(n, seed)
    elif name == "capitalisation":
        specs = capitalisation_specs(n, seed)
    elif name == "acronyms":
        specs = acronym_specs(model, n, seed)
    else:
        raise ValueError(f"unknown small task {name!r}; choose pronouns, capitalisation or acronyms.")
    return build_pairs(model, specs, task=name, metric="logit_diff", on_mismatch="drop")
