"""Fine-tuning and models trained on a model: LoRA/full fine-tuning, base-vs-tuned comparison, and inversion of the
residual stream ("ML Chinese whispers", :mod:`interplab.finetune.invert`)."""
