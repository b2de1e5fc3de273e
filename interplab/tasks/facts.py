"""Factual recall: subject–relation–answer facts written for this project, for causal tracing
(Meng et al. 2022, "Locating and Editing Factual Associations in GPT") and patching.

Each fact is a prompt template with one ``{}`` for the subject, the subject and the answer (with its
leading space; its first token is scored). :func:`known_facts` keeps the facts a model gets right
(the answer's first token is its top-1 prediction), as ROME does, and says how many survived.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from interplab.tasks.pairs import PairSpec, PromptPairs, build_pairs

_CAPITAL = "The capital of {} is the city of"
_LANG = "The official language of {} is"
_CONT = "{} is a country in the continent of"
_CITY = "The {} is located in the city of"
_CUR = "The currency of {} is the"
_SPORT = "{} is a professional"
_COLOR = "The color of {} is"

FACTS: tuple[tuple[str, str, str], ...] = (
    # capitals
    *[
        (_CAPITAL, s, a)
        for s, a in [
            ("France", " Paris"),
            ("Germany", " Berlin"),
            ("Italy", " Rome"),
            ("Spain", " Madrid"),
            ("Japan", " Tokyo"),
            ("Russia", " Moscow"),
            ("England", " London"),
            ("Egypt", " Cairo"),
            ("Greece", " Athens"),
            ("Portugal", " Lisbon"),
            ("Austria", " Vienna"),
            ("Poland", " Warsaw"),
            ("Ireland", " Dublin"),
            ("Norway", " Oslo"),
            ("Sweden", " Stockholm"),
            ("Finland", " Helsinki"),
            ("Denmark", " Copenhagen"),
            ("Hungary", " Budapest"),
            ("China", " Beijing"),
            ("Thailand", " Bangkok"),
            ("Kenya", " Nairobi"),
            ("Peru", " Lima"),
            ("Cuba", " Havana"),
            ("Turkey", " Ankara"),
            ("Iran", " Tehran"),
            ("Iraq", " Baghdad"),
            ("Belgium", " Brussels"),
            ("the Netherlands", " Amsterdam"),
            ("Canada", " Ottawa"),
            ("Australia", " Canberra"),
            ("Argentina", " Buenos"),
            ("Chile", " Santiago"),
            ("Colombia", " Bogot"),
            ("Mexico", " Mexico"),
            ("South Korea", " Seoul"),
            ("Vietnam", " Hanoi"),
            ("Indonesia", " Jakarta"),
            ("the Philippines", " Manila"),
            ("Switzerland", " Bern"),
            ("the Czech Republic", " Prague"),
        ]
    ],
    # official languages
    *[
        (_LANG, s, a)
        for s, a in [
            ("France", " French"),
            ("Germany", " German"),
            ("Italy", " Italian"),
            ("Spain", " Spanish"),
            ("Japan", " Japanese"),
            ("Russia", " Russian"),
            ("China", " Mandarin"),
            ("Brazil", " Portuguese"),
            ("Portugal", " Portuguese"),
            ("Mexico", " Spanish"),
            ("Greece", " Greek"),
            ("Poland", " Polish"),
            ("Sweden", " Swedish"),
            ("Turkey", " Turkish"),
            ("the Netherlands", " Dutch"),
            ("Egypt", " Arabic"),
            ("Argentina", " Spanish"),
            ("Austria", " German"),
            ("Korea", " Korean"),
            ("Finland", " Finnish"),
        ]
    ],
    # continents
    *[
        (_CONT, s, a)
        for s, a in [
            ("France", " Europe"),
            ("Germany", " Europe"),
            ("Italy", " Europe"),
            ("Kenya", " Africa"),
            ("Nigeria", " Africa"),
            ("Egypt", " Africa"),
            ("Ghana", " Africa"),
            ("Ethiopia", " Africa"),
            ("Japan", " Asia"),
            ("China", " Asia"),
            ("India", " Asia"),
            ("Thailand", " Asia"),
            ("Vietnam", " Asia"),
            ("Brazil", " South"),
            ("Argentina", " South"),
            ("Peru", " South"),
            ("Chile", " South"),
            ("Canada", " North"),
            ("Poland", " Europe"),
            ("Norway", " Europe"),
            ("Mongolia", " Asia"),
            ("Morocco", " Africa"),
            ("Spain", " Europe"),
        ]
    ],
    # landmarks
    *[
        (_CITY, s, a)
        for s, a in [
            ("Eiffel Tower", " Paris"),
            ("Colosseum", " Rome"),
            ("Statue of Liberty", " New"),
            ("Big Ben", " London"),
            ("Brandenburg Gate", " Berlin"),
            ("Kremlin", " Moscow"),
            ("Louvre", " Paris"),
            ("Sydney Opera House", " Sydney"),
            ("Golden Gate Bridge", " San"),
            ("Space Needle", " Seattle"),
            ("Acropolis", " Athens"),
            ("Sagrada Familia", " Barcelona"),
            ("Tower of London", " London"),
            ("Empire State Building", " New"),
            ("Vatican", " Rome"),
            ("Forbidden City", " Beijing"),
            ("Hollywood sign", " Los"),
            ("Buckingham Palace", " London"),
            ("White House", " Washington"),
            ("Leaning Tower of Pisa", " Pisa"),
            ("Taj Mahal", " Agra"),
            ("Burj Khalifa", " Dubai"),
            ("Alamo", " San"),
        ]
    ],
    # currencies
    *[
        (_CUR, s, a)
        for s, a in [
            ("Japan", " yen"),
            ("the United Kingdom", " pound"),
            ("India", " rupee"),
            ("Russia", " ruble"),
            ("China", " yuan"),
            ("Mexico", " peso"),
            ("the United States", " dollar"),
            ("Switzerland", " Swiss"),
            ("South Korea", " won"),
            ("Brazil", " real"),
            ("Germany", " euro"),
            ("Canada", " Canadian"),
        ]
    ],
    # athletes
    *[
        (_SPORT, s, a)
        for s, a in [
            ("Michael Jordan", " basketball"),
            ("LeBron James", " basketball"),
            ("Kobe Bryant", " basketball"),
            ("Lionel Messi", " football"),
            ("Cristiano Ronaldo", " football"),
            ("Roger Federer", " tennis"),
            ("Serena Williams", " tennis"),
            ("Rafael Nadal", " tennis"),
            ("Tiger Woods", " golfer"),
            ("Tom Brady", " football"),
            ("Babe Ruth", " baseball"),
            ("Wayne Gretzky", " hockey"),
            ("Usain Bolt", " sprinter"),
            ("Muhammad Ali", " boxer"),
            ("Stephen Curry", " basketball"),
        ]
    ],
    # colours
    *[
        (_COLOR, s, a)
        for s, a in [
            ("a ripe banana", " yellow"),
            ("grass", " green"),
            ("the sky on a clear day", " blue"),
            ("snow", " white"),
            ("coal", " black"),
            ("a ripe tomato", " red"),
            ("an orange", " orange"),
            ("blood", " red"),
            ("a lemon", " yellow"),
            ("milk", " white"),
        ]
    ],
)


@dataclass(frozen=True)
class Fact:
    template: str
    subject: str
    answer: str

    @property
    def prompt(self) -> str:
        return self.template.format(self.subject)


def all_facts() -> list[Fact]:
    return [Fact(t, s, a) for t, s, a in FACTS]


def read_facts(path) -> list[Fact]:
    """A user's facts from a ``.jsonl`` or ``.csv`` file (:func:`interplab.io.records.read_records`): each row has
    ``subject``, ``answer`` (with its leading space; its first token is scored) and either ``prompt`` (holding the
    subject) or ``template`` (with one ``{}`` where the subject goes). A row that breaks this is reported with its
    line number."""
    from interplab.io.records import RecordError, read_records

    facts = []
    for r in read_records(path, ["subject", "answer"], what="fact"):
        where = f"{path}, line {r['line']}"
        subject = str(r["subject"])
        if r.get("template"):
            template = str(r["template"])
            if template.count("{}") != 1:
                raise RecordError(f"{where}: the template must hold exactly one {{}} for the subject: {template!r}.")
        elif r.get("prompt"):
            prompt = str(r["prompt"])
            if subject not in prompt:
                raise RecordError(f"{where}: the subject {subject!r} does not occur in the prompt {prompt!r}.")
            template = prompt.replace("{", "{{").replace("}", "}}").replace(subject, "{}", 1)
        else:
            raise RecordError(f"{where}: the fact needs a 'prompt' (holding the subject) or a 'template' with {{}}.")
        facts.append(Fact(template, subject, str(r["answer"])))
    return facts


def _top1(model, prompts: Sequence[str], batch: int = 32) -> list[int]:
    from interplab.models.scoring import last_token_logits

    return [
        t for rows in last_token_logits(model, prompts, batch, attention_mask=True) for t in rows.argmax(-1).tolist()
    ]


def known_facts(model, facts: Sequence[Fact] | None = None) -> tuple[list[Fact], dict]:
    """The facts whose answer's first token is ``model``'s top-1 next token, and a summary
    ``{"n_total", "n_known", "by_relation": {template: [known, total]}}``."""
    facts = list(facts or all_facts())
    preds = _top1(model, [f.prompt for f in facts])
    kept, by = [], {}
    for f, p in zip(facts, preds):
        a, _ = model.first_token_id(f.answer, "answer")
        ok = p == a
        k = by.setdefault(f.template, [0, 0])
        k[0] += ok
        k[1] += 1
        if ok:
            kept.append(f)
    return kept, {"n_total": len(facts), "n_known": len(kept), "by_relation": by}


def fact_pairs(model, facts: Sequence[Fact] | None = None, seed: int = 0, only_known: bool = True) -> PromptPairs:
    """Clean/corrupt pairs for patching: each fact's subject is swapped for another subject of the same
    relation with the same token length and a different answer (the corrupt prompt's answer is the
    metric's ``wrong``). Named positions: ``subject_first``, ``subject_last``, ``END``. Metric: logit
    difference. Facts with no same-length partner are dropped (listed in ``dropped``)."""
    import random

    facts = list(facts or all_facts())
    if only_known:
        facts, _ = known_facts(model, facts)
    tok = model.need_tokenizer()
    length = {
        f: len(
            tok(" " + f.subject if not f.template.startswith("{}") else f.subject, add_special_tokens=False)[
                "input_ids"
            ]
        )
        for f in facts
    }
    rng = random.Random(seed)
    specs, dropped = [], []
    for f in facts:
        partners = [g for g in facts if g.template == f.template and g.answer != f.answer and length[g] == length[f]]
        if not partners:
            dropped.append(f"{f.prompt!r}: no same-length subject with another answer")
            continue
        g = rng.choice(partners)
        specs.append(
            PairSpec(
                _fact_segments(f),
                _fact_segments(f, g.subject),
                answer=f.answer,
                wrong=g.answer,
                meta={"subject": f.subject, "corrupt_subject": g.subject, "template": f.template},
            )
        )
    pairs = build_pairs(model, specs, task="facts", metric="logit_diff", on_mismatch="drop")
    pairs.dropped = dropped + pairs.dropped
    return pairs


def _fact_segments(f: Fact, subject: str | None = None):
    pre, post = f.template.split("{}")
    subj = subject or f.subject
    segs = []
    if pre:
        segs.append((pre, None))
    # subject_first: the token holding the subject's first character
    segs.append((subj[0], "subject_first"))
    if len(subj) > 1:
        segs.append((subj[1:], "subject_last"))
    else:
        segs[-1] = (subj, "subject_last")
    segs.append((post, None))
    return segs
