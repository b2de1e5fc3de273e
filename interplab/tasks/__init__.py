"""Built-in inputs for analyses: repeated random tokens (induction), natural-text corpora, and
clean/corrupt prompt-pair tasks for patching (IOI, factual recall, pronouns, capitalisation, acronyms)."""

from interplab.tasks.corpus import DEFAULT_CORPUS, corpus_text, token_chunks
from interplab.tasks.induction import repeated_tokens
from interplab.tasks.pairs import PairSpec, PromptPairs, build_pairs, pairs_from_tokens

TASKS = ("ioi", "facts", "pronouns", "capitalisation", "acronyms")


def get_task(model, name: str, n: int = 40, seed: int = 0, **kw) -> PromptPairs:
    """Clean/corrupt pairs of a named task for ``model`` (see :data:`TASKS`)."""
    if name == "ioi":
        from interplab.tasks.ioi import ioi

        return ioi(model, n=n, seed=seed, **kw)
    if name == "facts":
        from interplab.tasks.facts import fact_pairs

        pairs = fact_pairs(model, seed=seed, **kw)
        return pairs.head(n) if n else pairs
    if name in ("pronouns", "capitalisation", "acronyms"):
        from interplab.tasks.small import small_task

        return small_task(model, name, n=n, seed=seed)
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}.")


__all__ = [
    "DEFAULT_CORPUS",
    "TASKS",
    "PairSpec",
    "PromptPairs",
    "build_pairs",
    "corpus_text",
    "get_task",
    "pairs_from_tokens",
    "repeated_tokens",
    "token_chunks",
]
