"""Named colours. Instructions refer to objects by these names, so hard-mode colour randomisation
draws from this palette (and the instruction follows the colour the renderer shows)."""

import numpy as np

COLOURS = (
    ("red", (0.85, 0.15, 0.12)),
    ("green", (0.15, 0.7, 0.25)),
    ("blue", (0.15, 0.3, 0.85)),
    ("yellow", (0.95, 0.85, 0.12)),
    ("purple", (0.55, 0.2, 0.75)),
    ("orange", (0.98, 0.5, 0.08)),
    ("cyan", (0.1, 0.8, 0.85)),
    ("pink", (0.95, 0.45, 0.7)),
    ("white", (0.95, 0.95, 0.95)),
    ("black", (0.08, 0.08, 0.08)),
)
NAMES = tuple(n for n, _ in COLOURS)
RGB = np.array([c for _, c in COLOURS], np.float32)


def index(name: str) -> int:
  return NAMES.index(name)
