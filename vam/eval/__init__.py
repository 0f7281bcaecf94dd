"""The evaluation harness: `python -m vam.eval`. It never imports `vam.train` (see vam/checkpoints.py)."""
