"""Embodiment registry: name -> class."""

from vam.sim.embodiments.arm6 import Arm6
from vam.sim.embodiments.base import Embodiment
from vam.sim.embodiments.gantry import Gantry
from vam.sim.embodiments.human_hand import HumanHand

EMBODIMENTS = {cls.name: cls for cls in (Arm6, Gantry, HumanHand)}


def get(name: str) -> Embodiment:
  if name not in EMBODIMENTS:
    raise ValueError(f"unknown embodiment {name!r}; valid embodiments: {sorted(EMBODIMENTS)}")
  return EMBODIMENTS[name]()
