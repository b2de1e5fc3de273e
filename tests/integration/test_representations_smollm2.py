"""Integration tests on the real SmolLM2-135M (marked ``integration``) and the browser."""

import numpy as np
import pytest

from interplab.analyses.representations.probes import (
    collect_activations,
    group_split,
    probe_layers,
)
from interplab.tasks import truth as T


@pytest.mark.integration
def test_smollm2_knows_number_comparisons(smollm2):
    """Validation: on number comparisons (shortcut-controlled, tasks.truth.number_statements) a supervised probe on
    SmolLM2's residual stream at the statement's last token is well above chance on held-out statements."""
    st = T.number_statements(300, seed=0)
    y = np.array([s.label for s in st])
    acts = collect_activations(smollm2, [s.text for s in st], layers=[6, 9, 12], batch_size=32)
    tr, te = group_split(np.arange(len(st)), 0.3, 0)
    sweep = probe_layers(acts, y, tr, te)
    assert max(sweep.test_acc) > 0.75, sweep.to_frame()
