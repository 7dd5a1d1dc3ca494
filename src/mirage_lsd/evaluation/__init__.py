"""Measuring a model on a stream: fidelity to a look, flicker and drift."""
