"""Sparse autoencoders (SAEs) on activations, with the controls that show what an SAE finds on data with no features.

**Architectures.**

* ``kind="relu"``: ReLU encoder with an L1 penalty, as in Bricken et al. (2023), "Towards Monosemanticity:
  Decomposing Language Models With Dictionary Learning" (Transformer Circuits Thread), with the loss of
  Anthropic's April 2024 update: ``||x - x̂||² + λ Σ_i f_i ||W_dec,i||``. Decoder rows are kept at unit
  norm (renormalised after every step, the gradient component parallel to each row removed before it),
  so the penalty is ``λ Σ f_i``. Dead features are **resampled** as in Bricken et al.: at fixed steps every
  feature that has not fired for ``dead_window`` tokens gets a decoder row pointing at an input drawn with
  probability proportional to its squared reconstruction error, an encoder row of that direction scaled to
  0.2 × the mean norm of the live encoder rows, bias 0, and fresh Adam moments.
* ``kind="topk"``: TopK activation (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):
  ``f = ReLU(TopK(W_enc (x - b_dec) + b_enc))``, exactly ``k`` (or fewer) non-zeros per token, loss
  ``||x - x̂||²`` plus their AuxK loss (the ``k_aux`` largest pre-activations of the *dead* features
  reconstruct the residual error, coefficient 1/32), encoder initialised as the decoder's transpose.

* ``kind="jumprelu"``: JumpReLU (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity
  with JumpReLU Sparse Autoencoders"): ``f = z · H(z − θ)`` with a learned per-feature threshold ``θ = exp(log θ)``,
  loss ``||x − x̂||² + λ ||f||_0``, trained with their straight-through estimators (rectangle kernel of bandwidth
  ε for the θ-gradients of both the jump and the L0 count; no gradient to ``z`` through the L0 term). The
  defaults (θ₀ = 0.5, ε = 0.05, λ = 0.5, encoder = decoder transpose) are chosen for short CPU runs, not tuned
  at scale: after a few hundred steps JumpReLU SAEs here are sparser than the initial code but still
  reconstruct worse than TopK at equal L0.

Inputs are scaled by one scalar so that ``E||x||² = d`` on the training data (folded into ``scale``; the
SAE maps raw activations to raw reconstructions), so λ means the same at every hook point.

**Metrics** (:func:`evaluate`), each on the training rows and on held-out rows:

* ``l0``: mean number of non-zero features per token;
* ``explained_variance``: ``1 - Σ||x - x̂||² / Σ||x - x̄||²`` where ``x̄`` is the mean of the *evaluated* rows,
  so predicting that mean scores exactly 0 and a perfect reconstruction 1;
* ``mse``: mean squared error per element (raw activation units);
* ``dead_frac``: fraction of features that never fire on the evaluated rows;
* ``ce_score`` (with a model, :func:`ce_score`): the SAE spliced into the forward pass at its hook with an
  :class:`interplab.Apply` intervention, ``(CE_zero − CE_sae) / (CE_zero − CE_clean)`` where ``CE_zero`` is the
  next-token cross-entropy with the hook **zero-ablated** (Ablate how="zero") — 1 means the SAE loses nothing,
  0 means it is as bad as deleting the activation.

**Controls** (:func:`run_sae` with ``controls=True``, all in the same command): isotropic Gaussian; a mixture of
12 Gaussians; uniform points in the unit square (d=2) and cube (d=3); layer-0 (``hook_embed``) activations of the same
tokens; the same SAE with a frozen random decoder; PCA at equal L0; and sparse data with a known dictionary,
scored by recovery. **PCA at equal L0** is given two ways, both fitted on the training rows and scored on
the held-out rows: ``pca_top`` keeps the top ``m = round(L0)`` principal components (a dense rank-m code);
``pca_topk`` keeps, per token, the ``m`` largest-magnitude coefficients over *all* principal components (a
code with exactly the SAE's L0 in the PCA basis — the fairer sparse baseline, used for the Gaussian check).
**Recovery** of a known dictionary: for each true atom the maximum cosine similarity with any decoder row;
``recovery`` is the fraction with maximum cosine ≥ 0.9 (``mmcs`` the mean maximum cosine).

Modules: :mod:`.data` (in-memory and synthetic activation sets), :mod:`.model` (:class:`SAEConfig`, :class:`SAE`,
the JumpReLU estimators), :mod:`.training` (:func:`train_sae`, checkpoints, resampling), :mod:`.metrics`,
:mod:`.controls` (PCA baseline, recovery, synthetic controls), :mod:`.browser` (top-activating contexts) and
:mod:`.experiment` (:func:`run_sae`, :class:`SAEResult`). The HTML report of a result is
:mod:`interplab.report.sections.sae`.
"""

from interplab.analyses.sae.browser import top_contexts
from interplab.analyses.sae.controls import (
    PCA,
    PCAMode,
    control_config,
    control_entry,
    fit_and_score,
    recovery,
    run_synthetic_controls,
)
from interplab.analyses.sae.data import (
    SYNTHETIC,
    SyntheticName,
    TensorData,
    gaussian,
    known_dictionary,
    make_synthetic,
    mixture,
    uniform,
)
from interplab.analyses.sae.experiment import SAEData, SAEResult, run_sae
from interplab.analyses.sae.metrics import ce_score, evaluate, explained_variance
from interplab.analyses.sae.model import KINDS, SAE, JumpReLU, SAEConfig, SAEKind, Step
from interplab.analyses.sae.training import (
    TrainState,
    load_checkpoint,
    resample_dead_features,
    save_checkpoint,
    train_sae,
)

__all__ = [
    "KINDS",
    "PCA",
    "SAE",
    "SYNTHETIC",
    "JumpReLU",
    "PCAMode",
    "SAEConfig",
    "SAEData",
    "SAEKind",
    "SAEResult",
    "Step",
    "SyntheticName",
    "TensorData",
    "TrainState",
    "ce_score",
    "control_config",
    "control_entry",
    "evaluate",
    "explained_variance",
    "fit_and_score",
    "gaussian",
    "known_dictionary",
    "load_checkpoint",
    "make_synthetic",
    "mixture",
    "recovery",
    "resample_dead_features",
    "run_sae",
    "run_synthetic_controls",
    "save_checkpoint",
    "top_contexts",
    "train_sae",
    "uniform",
]
