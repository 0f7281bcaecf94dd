"""Episode -> training window: context frames, future frames, proprio, a unified action chunk, masks.

For a step t of an episode of length T (tf = `temporal_factor`, the frames per latent frame of a video
model's autoencoder, 1 otherwise; s = `frame_stride`; latent frames are groups of tf consecutive frames whose
last steps are d = tf * s apart -- s = 1: back to back, s > 1: a longer horizon from as many frames):
  images          (H_o * tf, H, W, 3)  groups ending at t-(H_o-1)*d .. t-d, t (clamped at 0)
  future_images   (H_f * tf, H, W, 3)  groups ending at t+d .. t+H_f*d (clamped at T-1)
  image_mask      (H_o,)          latent frames (groups of tf frames) that start inside the episode
  future_mask     (H_f,)          latent frames that end inside the episode (the video loss's mask)
  context_latents (H_o, h, w, C)  with precomputed latents (latent of step s = frames s-tf+1 .. s): the
  future_latents  (H_f, h, w, C)  latents of steps t-(H_o-1-j)*d and t+(j+1)*d, the same groups as above
  proprio         (P,)            normalised native state at t, zero-padded to P
  future_proprio  (H_f, P)        the same at the future frames' steps t+d .. t+H_f*d (clamped at T-1; zeros for
                                  video-only episodes; only with H_f > 0)
  actions         (H_a, A)        normalised unified chunk (vam/embodiment.py) of actions t..t+H_a-1:
                                  end-effector poses they command relative to the pose at t, joint targets
                                  as deltas from the joints at t, gripper commands (the hand: keypoints
                                  t+1..t+H_a relative to t); `action_mask` = valid slot dims x valid steps
                                  (the episode's own slots and, with mutual imitation, the mapped slots of
                                  the other embodiments: `mapped_mask` (H_a, A) marks those)
Video-only episodes (plain videos, stage 1) have every action entry masked out and a zero proprio.
Steps whose hand was tracked below the confidence threshold (`hand_valid`, real video) mask every chunk step
that reads them. Chunk steps past the episode's end repeat its last action -- the robot holds where the demo ended -- and are
trained on (`pad='repeat'`, Diffusion Policy's padding): a policy that replans near its goal must have
learnt to stay there. `pad='mask'` masks them out instead.
"""

import dataclasses

import numpy as np

from vam import embodiment as embodiment_lib

INSTRUCTION_BYTES = 96


@dataclasses.dataclass(frozen=True)
class WindowSpec:
  context_frames: int = 2  # H_o
  future_frames: int = 0  # H_f (the video model's targets; 0 for action-only policies)
  action_horizon: int = 8  # H_a
  proprio_dim: int = 17  # P: widest proprio of the embodiments in the mixture
  temporal_factor: int = 1  # frames per latent frame (video models)
  frame_stride: int = 1  # latent frames are tf * frame_stride steps apart (1: consecutive groups)
  references: bool = False  # also the reference chunks `hold_actions` / `last_actions` (offline metrics)
  pad: str = "repeat"  # chunk steps past the episode's end: repeat its last action (hold) | mask them out
  # Windows carry the simulator's privileged state (where its statistics exist). Off when the mixture holds
  # real data, which has none: every window of a batch must have the same keys.
  privileged: bool = True


def frame_stride(data_config) -> int:
  """`config.data.frame_stride` (absent in older configs: 1), checked: the one reader of it."""
  stride = data_config.get("frame_stride", 1)
  if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
    raise ValueError(f"config.data.frame_stride={stride!r} must be an integer >= 1 (steps between latent frames, "
                     "in units of the autoencoder's temporal factor)")
  return stride


def encode_instruction(text: str) -> np.ndarray:
  """UTF-8 bytes, zero-padded/truncated to INSTRUCTION_BYTES (a fixed shape for batching)."""
  raw = np.frombuffer(text.encode("utf-8")[:INSTRUCTION_BYTES], np.uint8)
  return np.pad(raw, (0, INSTRUCTION_BYTES - len(raw)))


def decode_instruction(codes: np.ndarray) -> str:
  return bytes(np.asarray(codes, np.uint8)).rstrip(b"\0").decode("utf-8", errors="replace")


PADS = ("repeat", "mask")
# Mapped trajectories can leave the target embodiment's own range by far (a hand turns its wrist where the
# robot's demos never turn the gripper: tens of normalised units); clipped so they cannot swamp the loss.
MAPPED_CLIP = 5.0


def unified_chunk(ep: dict, t: int, horizon: int, space: embodiment_lib.ActionSpace, views=None, pad="repeat"):
  """Raw (un-normalised) unified action chunk (H_a, A), its validity mask (H_a, A) and the mask of the mapped
  slots (H_a, A). `views` {embodiment: {eef, eef_target, state, action, hand_keypoints}}: other embodiments' mapped
  trajectories of this episode (`embodiment.map_episode`), filled into their slots like the episode's own."""
  T = len(ep["action"])
  ks = np.arange(horizon)
  # With masking, the pose reached after action t+k must exist; repeating holds the last action instead.
  valid_t = (t + 1 + ks <= T - 1) if pad == "mask" else np.ones(horizon, bool)
  nxt = np.minimum(t + 1 + ks, T - 1)
  if "hand_valid" in ep:  # real hand tracking: a chunk step needs a confidently tracked hand now and then
    valid_t = valid_t & ep["hand_valid"][nxt] & ep["hand_valid"][t]
  act = np.minimum(t + ks, T - 1)
  chunk = np.zeros((horizon, space.dim), np.float32)
  mapped = np.zeros(space.dim, bool)
  for name, view in [(ep["embodiment"], ep)] + list((views or {}).items()):
    for slot in space.own_slots(name):
      if slot.kind == "hand":
        chunk[:, slot.slice] = embodiment_lib.relative_hand(view["hand_keypoints"][t], view["hand_keypoints"][nxt])
      elif slot.kind == "eef":
        rel = embodiment_lib.relative_pose(view["eef"][t], view["eef_target"][act])
        chunk[:, slot.slice] = np.concatenate([rel, view["action"][act, -1:]], axis=-1)
      else:
        joints = embodiment_lib.joint_positions(name, view["state"][t])
        chunk[:, slot.slice] = embodiment_lib.relative_joints(joints, view["action"][act])
    if view is not ep:
      mapped |= space.embodiment_mask(name)
  own = space.embodiment_mask(ep["embodiment"])
  return chunk, valid_t[:, None] & (own | mapped)[None, :], valid_t[:, None] & mapped[None, :]


def reference_chunks(ep: dict, t: int, horizon: int, space) -> dict:
  """Raw unified chunks (H_a, A) of two simple policies, for the episode's own slots at step t:
  `hold`: stay where it is (zero joint deltas, the current pose, the gripper command matching its opening);
  `last`: repeat the previous step's action (joint targets and gripper command of step t-1; at t = 0, hold)."""
  T = len(ep["action"])
  name = ep["embodiment"]
  rep = lambda x: np.repeat(x[None], T, axis=0)
  still = {k: rep(ep[k][t]) for k in ("eef", "hand_keypoints") if k in ep}
  if name == embodiment_lib.HAND:
    hold = last = dict(ep, **still)
  else:
    joints = embodiment_lib.joint_positions(name, ep["state"][t])
    held = np.concatenate([joints, 1.0 - embodiment_lib.gripper_opening(name, ep["state"][t])])
    hold = dict(ep, **still, eef_target=rep(ep["eef"][t]), action=rep(held))
    last = hold if t == 0 else dict(ep, **still, eef_target=rep(ep["eef_target"][t - 1]),
                                    action=rep(ep["action"][t - 1]))
  return {k: unified_chunk(v, t, horizon, space)[0] for k, v in (("hold", hold), ("last", last))}


def make_window(ep: dict, t: int, spec: WindowSpec, space, normalizer) -> dict:
  T, tf = len(ep["images"]), spec.temporal_factor
  d = tf * spec.frame_stride  # steps between the last frames of consecutive latent frames
  ctx_ends = t - (spec.context_frames - 1 - np.arange(spec.context_frames)) * d  # last step of each group
  fut_ends = t + (1 + np.arange(spec.future_frames)) * d
  group = np.arange(tf) - tf + 1  # a group's frames relative to its last step
  ctx, fut = (ctx_ends[:, None] + group).ravel(), (fut_ends[:, None] + group).ravel()
  name = ep["embodiment"]
  if "action" not in ep:  # video-only (stage 1): every action entry masked out, no proprio
    mask = mapped_mask = np.zeros((spec.action_horizon, space.dim), bool)
    normalized = np.zeros((spec.action_horizon, space.dim), np.float32)
    proprio = np.zeros(spec.proprio_dim, np.float32)
    future_proprio = np.zeros((spec.future_frames, len(proprio)), np.float32)
  else:
    views = ep.get("mapped", {})
    chunk, mask, mapped_mask = unified_chunk(ep, t, spec.action_horizon, space, views, spec.pad)
    normalized = normalizer.normalize_actions(name, chunk)
    for other in views:  # mapped slots take their own embodiment's statistics
      mapped = np.clip(normalizer.normalize_actions(other, chunk), -MAPPED_CLIP, MAPPED_CLIP)
      normalized = np.where(space.embodiment_mask(other), mapped, normalized)
    proprio = normalizer.normalize_state(name, ep["state"][t], ep["eef"][t])
    at = np.clip(fut_ends, 0, T - 1)
    future_proprio = (normalizer.normalize_state(name, ep["state"][at], ep["eef"][at]) if spec.future_frames
                      else None)
  out = {}
  if spec.future_frames:  # where the robot is at each future frame (a VAM's future-state probe's target)
    out["future_proprio"] = future_proprio
  if spec.privileged and "privileged" in ep and name in normalizer.privileged_offset:  # the privileged-state policy's input only
    out["privileged"] = normalizer.normalize_privileged(name, ep["privileged"][t])
  if spec.references:
    for key, ref in (reference_chunks(ep, t, spec.action_horizon, space).items() if "action" in ep else
                     ((k, None) for k in ("hold", "last"))):
      out[f"{key}_actions"] = (normalized if ref is None else
                               np.where(mask, normalizer.normalize_actions(name, ref), 0.0)).astype(np.float32)
  if "latents" in ep:
    out.update(context_latents=ep["latents"][np.clip(ctx_ends, 0, T - 1)],
               future_latents=ep["latents"][np.clip(fut_ends, 0, T - 1)])
  return dict(
      out,
      images=ep["images"][np.clip(ctx, 0, T - 1)],
      image_mask=ctx_ends - tf + 1 >= 0,
      future_images=ep["images"][np.clip(fut, 0, T - 1)],
      future_mask=fut_ends <= T - 1,
      proprio=proprio,
      actions=np.where(mask, normalized, 0.0).astype(np.float32),
      action_mask=mask,
      mapped_mask=mapped_mask,
      embodiment_id=np.int32(space.embodiments.index(name)),
      instruction=encode_instruction(ep["instruction"]),
  )
