"""Flax NNX modules. Pure model code: no files, datasets or simulation (DESIGN.md)."""
