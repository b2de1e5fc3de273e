"""True / false statements rendered as contrast pairs, for probes and CCS (Burns et al. 2022, "Discovering
Latent Knowledge in Language Models Without Supervision").

Each statement ``s`` (with a truth label) is put through several prompt templates ending in a question
and an answer slot; the contrast pair is ``x⁺`` = prompt + " Yes" and ``x⁻`` = prompt + " No" (the two
answers of Burns et al.), and the bare prompt gives the model's zero-shot answer (logit of " Yes" vs " No").

Statement families (``make_truth_dataset(name)``):

* ``numbers`` — number comparisons in words, "Fifty-one is larger than fifty-two." (and "smaller"),
  difficulty = how close the two numbers are (easy: far apart; hard: adjacent);
* ``arithmetic`` — small sums, "Seven plus five is twelve." with wrong sums off by 1–3 (difficulty: the size
  of the error, small = hard);
* ``capitals`` — "The capital of France is Paris." (true) / a wrong capital (false), optionally filtered to
  the countries whose capital *the model itself* names (:func:`known_capitals`);
* ``negations`` — the number comparisons negated ("Fifty-one is not larger than fifty-two."), labels flipped;
* add ``+neg`` to a name (``numbers+neg``) to mix a family with its negations.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_word(n: int) -> str:
    """English words for 0 ≤ n ≤ 99 ("fifty-one")."""
    if not 0 <= n <= 99:
        raise ValueError(f"number_word handles 0..99, got {n}.")
    if n < 20:
        return _ONES[n]
    t, o = divmod(n, 10)
    return _TENS[t] + ("" if o == 0 else "-" + _ONES[o])


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# Countries whose capitals are well known, with the capital as it would follow "The capital of X is".
CAPITALS: dict[str, str] = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "China": "Beijing",
    "Russia": "Moscow",
    "Egypt": "Cairo",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Austria": "Vienna",
    "Ireland": "Dublin",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Poland": "Warsaw",
    "Hungary": "Budapest",
    "Belgium": "Brussels",
    "Netherlands": "Amsterdam",
    "Thailand": "Bangkok",
    "England": "London",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Argentina": "Buenos Aires",
    "Mexico": "Mexico City",
    "Cuba": "Havana",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Afghanistan": "Kabul",
    "South Korea": "Seoul",
    "Indonesia": "Jakarta",
    "Philippines": "Manila",
    "Vietnam": "Hanoi",
    "Ukraine": "Kyiv",
    "Czech Republic": "Prague",
    "Romania": "Bucharest",
    "Turkey": "Ankara",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "India": "New Delhi",
    "Chile": "Santiago",
    "Colombia": "Bogota",
    "Venezuela": "Caracas",
    "Scotland": "Edinburgh",
    "Syria": "Damascus",
    "Lebanon": "Beirut",
    "Saudi Arabia": "Riyadh",
    "Nigeria": "Abuja",
    "Ethiopia": "Addis Ababa",
    "Brazil": "Brasilia",
}

# Prompt templates: {s} is the statement; the contrast pair appends " Yes" / " No".
TEMPLATES: list[str] = [
    "{s} Is this statement true? Answer:",
    "Consider the following claim.\nClaim: {s}\nQuestion: Is the claim correct? Yes or No?\nAnswer:",
    "Q: True or false, answered Yes or No: {s}\nA:",
]
ANSWERS = (" Yes", " No")


@dataclass
class Statement:
    text: str
    label: int  # 1 true, 0 false
    kind: str
    difficulty: float  # larger = harder
    group: int  # statements derived from the same fact share a group (keep them on one side of a split)


@dataclass
class ContrastDataset:
    """Contrast pairs: row ``i`` is statement ``statement_idx[i]`` in template ``template[i]``."""

    name: str
    statements: list[Statement]
    prompts: list[str]  # question prompt (zero-shot reads the next-token logits here)
    pos: list[str]  # prompt + " Yes"
    neg: list[str]  # prompt + " No"
    labels: list[int]
    template: list[int]
    statement_idx: list[int]
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def groups(self) -> list[int]:
        return [self.statements[i].group for i in self.statement_idx]

    @property
    def difficulty(self) -> list[float]:
        return [self.statements[i].difficulty for i in self.statement_idx]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(
            {
                "prompt": self.prompts,
                "label": self.labels,
                "template": self.template,
                "statement": [self.statements[i].text for i in self.statement_idx],
                "kind": [self.statements[i].kind for i in self.statement_idx],
                "difficulty": self.difficulty,
                "group": self.groups,
            }
        )

    def to_dict(self) -> dict:
        return asdict(self)


def number_statements(
    n: int = 200, seed: int = 0, max_gap: int = 10, negate: bool = False, comparatives: tuple[str, ...] = ("larger",)
) -> list[Statement]:
    """Balanced true/false number comparisons in words: "Fifty-one is larger than fifty-two."

    Design against a shortcut: if ``a`` and ``b`` were drawn independently, the second number alone would
    predict the truth (a small ``b`` makes "a is larger than b" likely true), and a probe could read one
    number's magnitude instead of the comparison. Here ``b`` is uniform on ``[max_gap + 1, 99 − max_gap]``
    and ``a = b ± gap`` with ``gap`` uniform on ``1..max_gap`` and the sign alternating (balanced labels), so
    either number alone says almost nothing about the truth. Difficulty = 1 / gap (adjacent numbers hardest).
    ``comparatives``: "larger" and/or "smaller" (mixing them makes truth an XOR of the order and the word)."""
    rng = random.Random(seed)
    out: list[Statement] = []
    for g in range(n):
        b = rng.randint(max_gap + 1, 99 - max_gap)
        gap = rng.randint(1, max_gap)
        word = comparatives[g % len(comparatives)]
        want = (g // len(comparatives)) % 2 if len(comparatives) > 1 else g % 2
        a_bigger = bool(want) if word == "larger" else not want
        a = b + gap if a_bigger else b - gap
        neg = " not" if negate else ""
        text = f"{_cap(number_word(a))} is{neg} {word} than {number_word(b)}."
        out.append(Statement(text, int(want) ^ int(negate), "negation" if negate else "number", 1.0 / gap, g))
    return out


def arithmetic_statements(n: int = 200, seed: int = 0, max_term: int = 20) -> list[Statement]:
    """ "Seven plus five is twelve." (true) or with a wrong sum off by 1–3 (false); balanced."""
    rng = random.Random(seed)
    out = []
    for g in range(n):
        a, b = rng.randint(1, max_term), rng.randint(1, max_term)
        c = a + b
        label = g % 2
        err = 0 if label else rng.choice([-3, -2, -1, 1, 2, 3])
        if c + err < 0 or c + err > 99:
            err = -err
        text = f"{_cap(number_word(a))} plus {number_word(b)} is {number_word(c + err)}."
        out.append(Statement(text, label, "arithmetic", 0.0 if label else 1.0 / abs(err), g))
    return out


def capital_statements(countries: list[str] | None = None, seed: int = 0, n_false: int = 1) -> list[Statement]:
    """For each country one true statement and ``n_false`` false ones (another country's capital)."""
    rng = random.Random(seed)
    countries = list(CAPITALS) if countries is None else list(countries)
    caps = [CAPITALS[c] for c in CAPITALS]
    out = []
    for g, c in enumerate(countries):
        out.append(Statement(f"The capital of {c} is {CAPITALS[c]}.", 1, "capital", 0.0, g))
        wrong = rng.sample([x for x in caps if x != CAPITALS[c]], n_false)
        for w in wrong:
            out.append(Statement(f"The capital of {c} is {w}.", 0, "capital", 0.0, g))
    return out


def known_capitals(model, countries: list[str] | None = None, batch_size: int = 16) -> list[str]:
    """The countries whose capital the model names itself: the first token of " {capital}" is the model's top
    next-token prediction after "The capital of {country} is" (filter facts by the model's own answer)."""
    from interplab.models.scoring import last_token_logits

    countries = list(CAPITALS) if countries is None else list(countries)
    prompts = [f"The capital of {c} is" for c in countries]
    top = [t for rows in last_token_logits(model, prompts, batch_size) for t in rows.argmax(-1).tolist()]
    return [c for c, t in zip(countries, top) if model.first_token_id(" " + CAPITALS[c])[0] == t]


def render(
    name: str, statements: list[Statement], templates: list[str] | None = None, settings: dict | None = None
) -> ContrastDataset:
    """Render statements through the templates into contrast pairs."""
    templates = TEMPLATES if templates is None else templates
    prompts, pos, neg, labels, tmpl, idx = [], [], [], [], [], []
    for j, st in enumerate(statements):
        for t, tpl in enumerate(templates):
            p = tpl.format(s=st.text)
            prompts.append(p)
            pos.append(p + ANSWERS[0])
            neg.append(p + ANSWERS[1])
            labels.append(st.label)
            tmpl.append(t)
            idx.append(j)
    return ContrastDataset(name, list(statements), prompts, pos, neg, labels, tmpl, idx, dict(settings or {}))


DATASETS = ("numbers", "arithmetic", "capitals", "negations")


def make_truth_dataset(
    name: str = "numbers", n: int = 200, seed: int = 0, model=None, templates: list[str] | None = None
) -> ContrastDataset:
    """A named contrast dataset: ``numbers | arithmetic | capitals | negations`` (``+neg`` mixes in negations).
    ``capitals`` with a ``model`` keeps only the countries the model knows (:func:`known_capitals`)."""
    base, _, extra = name.partition("+")
    if base not in DATASETS or extra not in ("", "neg"):
        raise ValueError(
            f"unknown truth dataset {name!r}; choose one of {', '.join(DATASETS)} (optionally with '+neg')."
        )
    settings: dict[str, Any] = {"n": n, "seed": seed}
    if base == "numbers":
        st = number_statements(n, seed)
    elif base == "arithmetic":
        st = arithmetic_statements(n, seed)
    elif base == "negations":
        st = number_statements(n, seed, negate=True)
    else:
        countries = known_capitals(model) if model is not None and model.tokenizer is not None else None
        if countries is not None and len(countries) < 4:
            raise ValueError(
                f"the model names only {len(countries)} capitals itself ({countries}); too few for a dataset."
            )
        settings["countries"] = countries
        st = capital_statements(countries, seed)
    if extra == "neg":
        more = number_statements(n, seed + 1, negate=True)
        off = max(s.group for s in st) + 1
        st = st + [Statement(s.text, s.label, s.kind, s.difficulty, s.group + off) for s in more]
    return render(name, st, templates, settings)
