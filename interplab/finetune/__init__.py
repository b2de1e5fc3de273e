"""Fine-tuning: the fine-tuning loop, base-vs-tuned comparison and inversion."""
