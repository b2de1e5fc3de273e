"""The three long modules split into smaller ones (ablation, tracing, invert) still export every public name they
exported before, as the same objects, so ``from interplab... import`` lines written for the old modules keep working;
and the Result kinds, which saved files are loaded by, are unchanged."""

from __future__ import annotations

import importlib

import pytest

# old module -> (the names it exported before the split, the modules they now live in)
MOVED = {
    "interplab.analyses.causal.ablation": (
        [
            "HeadAblationResult",
            "How",
            "InductionAblationComparison",
            "MeanOver",
            "ablated_losses",
            "ablation_share",
            "compare_induction_ablation",
            "head_ablation_importance",
            "induction_scores",
            "resample_index",
            "DEFAULT_INDUCTION_THRESHOLD",
        ],
        ["interplab.analyses.causal.ablation_runs", "interplab.analyses.causal.induction_ablation"],
    ),
    "interplab.analyses.causal.tracing": (
        [
            "BUCKETS",
            "KINDS",
            "LATE_FRACTION",
            "SUBJECT_BUCKETS",
            "Corruption",
            "FactTrace",
            "Kind",
            "ResampleDraw",
            "TracingResult",
            "average_indirect_effect",
            "bucket_of",
            "causal_tracing",
            "draw_resamples",
            "embedding_noise_std",
            "refine",
            "resample_candidates",
            "subject_noise",
            "subject_span",
            "trace_chunk",
            "trace_fact",
        ],
        [
            "interplab.analyses.causal.tracing_corruption",
            "interplab.analyses.causal.tracing_result",
            "interplab.analyses.causal.tracing_refine",
        ],
    ),
    "interplab.finetune.invert": (
        [
            "POSITIONS",
            "PUBLISHED",
            "InversionResult",
            "Inverter",
            "InverterConfig",
            "Positions",
            "check_layer",
            "corpus_split",
            "decode_guesses",
            "guess_metrics",
            "invert",
            "parse_dims",
            "residual_hook",
            "residual_states",
            "token_set_f1",
            "train_inverter",
        ],
        ["interplab.finetune.invert_model"],
    ),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_still_exports_every_public_name_as_the_moved_object(old):
    names, new_modules = MOVED[old]
    mod = importlib.import_module(old)
    news = [importlib.import_module(m) for m in new_modules]
    for name in names:
        assert hasattr(mod, name), f"{old}.{name} is gone"
        for new in news:
            if hasattr(new, name):
                assert getattr(new, name) is getattr(mod, name), f"{old}.{name} is not {new.__name__}.{name}"


def test_saved_result_kinds_are_unchanged():
    from interplab.analyses.causal.ablation import HeadAblationResult, InductionAblationComparison
    from interplab.analyses.causal.tracing import TracingResult
    from interplab.finetune.invert import InversionResult

    kinds = {c.__name__: (c.KIND, c.FILE) for c in (HeadAblationResult, InductionAblationComparison, TracingResult)}
    kinds["InversionResult"] = (InversionResult.KIND, InversionResult.FILE)
    assert kinds == {
        "HeadAblationResult": ("head_ablation", "head_ablation.json"),
        "InductionAblationComparison": ("induction_ablation", "induction_ablation.json"),
        "TracingResult": ("causal_tracing", "tracing.json"),
        "InversionResult": ("inversion", "inversion.json"),
    }
