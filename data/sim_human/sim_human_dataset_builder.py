"""sim_human: scripted episodes of the simulated human hand in the same scenes and tasks."""

from vam.data import rlds


class SimHuman(rlds.SimBuilder):
  """Simulated human-hand demonstrations (RLDS) on reach, push, pick_place and stack.

  Besides the native action (wrist and finger-joint targets), every step stores the 24-D human hand
  action of METHOD.md in `observation/hand_keypoints` (wrist position, wrist 6D rotation, five
  fingertip positions) and the thumb knuckle position (`observation/thumb_knuckle`).
  """

  EMBODIMENTS = ("human_hand",)
  HUMAN = True
