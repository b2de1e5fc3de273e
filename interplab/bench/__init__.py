"""Benchmarks: interplab beside naive paths and peer libraries, timed under one interleaved protocol."""
