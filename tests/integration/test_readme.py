"""The README's library quickstart runs as written (on the real SmolLM2)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_readme_quickstart_runs(smollm2, monkeypatch):
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(r"## Library quickstart\n\n```python\n(.*?)```", text, re.DOTALL)
    assert found is not None, "README.md has no '## Library quickstart' python block"
    block = found.group(1)
    import interplab

    monkeypatch.setattr(interplab, "load", lambda name="smollm2-135m", **kw: smollm2)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)  # noqa: S102 (runs the README's own example)
    assert ns["cache"]["blocks.3.hook_resid_pre"].shape == (1, 14, 576)
