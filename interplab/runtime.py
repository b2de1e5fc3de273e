"""Process settings shared by every part of interplab: the torch thread count, set for a block and restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (0: leave torch's setting) and restore the previous
    count afterwards, also when the block raises. The one place interplab changes ``torch.set_num_threads``."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
