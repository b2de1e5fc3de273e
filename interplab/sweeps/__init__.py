"""Sweeps: one interplab command over a grid of options, each cell an ordinary run directory, on a serial,
process or Ray backend with identical results, resumable, gathered into one Parquet table
(:mod:`~interplab.sweeps.grid`, :mod:`~interplab.sweeps.cell`, :mod:`~interplab.sweeps.backends`,
:mod:`~interplab.sweeps.engine`; the command is ``interplab sweep``)."""
