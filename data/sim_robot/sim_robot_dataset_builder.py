"""sim_robot: scripted-expert episodes of the simulated robots (arm6, gantry) on the tabletop tasks."""

from vam.data import rlds


class SimRobot(rlds.SimBuilder):
  """Simulated robot demonstrations (RLDS): arm6 and gantry on reach, push, pick_place and stack.

  Native actions are absolute joint targets plus a gripper command, zero-padded to the widest
  embodiment (`episode_metadata/action_dim` gives the true width).
  """

  EMBODIMENTS = ("arm6", "gantry")
  HUMAN = False
