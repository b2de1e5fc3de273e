"""Representations: linear probes, CCS, concept erasure."""
