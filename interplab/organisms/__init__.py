"""Model organisms and their detection: toy backdoored transformers (:mod:`~interplab.organisms.toy`), populations of
them (:mod:`~interplab.organisms.population`), a LoRA backdoor on SmolLM2 (:mod:`~interplab.organisms.backdoor`),
backdoor detectors (:mod:`~interplab.organisms.detectors`) and their ROC-AUC / TrojAI cross-entropy over a
population (:mod:`~interplab.organisms.bench`). The CLI is ``interplab organism make|scan|bench``."""
