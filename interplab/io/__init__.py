"""Reading and writing: atomic writes, the Result base, run directories, activation datasets, checkpoints."""
