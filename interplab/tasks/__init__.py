"""Built-in inputs for analyses: repeated random tokens (induction) and natural-text corpora."""
from interplab.tasks.corpus import DEFAULT_CORPUS, corpus_text, token_chunks
from interplab.tasks.induction import repeated_tokens

__all__ = ["repeated_tokens", "corpus_text", "token_chunks", "DEFAULT_CORPUS"]
