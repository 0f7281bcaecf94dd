"""Which model a training config describes: `config.model.name` -> its constructor, the batch keys its
`loss` reads and the parameters its optimizer must leave alone. Training builds models through here, and
evaluation rebuilds them from a checkpoint's saved config the same way.

Every model has `loss(batch, rng) -> (loss, metrics)`; parameters travel as pure dicts (`Binder`).
"""

import functools

import jax
import ml_collections
from flax import nnx

from vam import embodiment as embodiment_lib
from vam.models import action_decoder, autoencoder, layers, policies, text, vam, video_dit, video_model

MODELS = tuple(policies.POLICIES) + ("autoencoder", "video_dit", "vam")
# Models of video alone: they learn from video-only datasets and are evaluated on held-out clips.
VIDEO_MODELS = ("autoencoder", "video_dit")


def check_name(config) -> str:
  name = config.model.name
  if name not in MODELS:
    raise ValueError(f"config.model.name={name!r}; valid: {list(MODELS)}")
  return name


def autoencoder_config(model_cfg) -> autoencoder.AutoencoderConfig:
  return autoencoder.AutoencoderConfig(**dict(model_cfg.autoencoder))


def video_section(config):
  """The part of a config that describes its video model: the config itself for `video_dit`, and for `vam`
  the stage-1 run's model section (`config.model.video`, adopted from `config.model.video_workdir`)."""
  if check_name(config) != "vam":
    return config
  return ml_collections.ConfigDict(dict(model=config.model.video.to_dict(), data=config.data.to_dict()))


def temporal_factor(config) -> int:
  """Frames per latent frame of the config's autoencoder (1 for models without one)."""
  if check_name(config) in policies.POLICIES:
    return 1
  return autoencoder_config(video_section(config).model).temporal_factor


def video_config(config, image_size: int, num_embodiments: int) -> video_model.VideoModelConfig:
  m, d = video_section(config).model, config.data
  ae = autoencoder_config(m)
  if image_size % ae.spatial_factor:
    raise ValueError(f"image size {image_size} is not divisible by the autoencoder's spatial factor "
                     f"{ae.spatial_factor} (config.model.autoencoder.patch)")
  latent = image_size // ae.spatial_factor
  txt = text.TextConfig(**dict(m.text))
  dit = video_dit.DiTConfig(**dict(m.dit), latent_channels=ae.latent_channels, latent_size=(latent, latent),
                            frames=d.context_frames + d.future_frames, text_dim=txt.width,
                            num_embodiments=num_embodiments)
  return video_model.VideoModelConfig(autoencoder=ae, text=txt, dit=dit, context_frames=d.context_frames,
                                      future_frames=d.future_frames, time_sampler=m.time_sampler,
                                      time_mean=m.time_mean, time_std=m.time_std, time_uniform=m.time_uniform, sample_steps=m.sample_steps,
                                      predict_residual=m.predict_residual, velocity_skip=m.velocity_skip,
                                      privileged_aux=m.get("privileged_aux", 0.0),
                                      privileged_dim=m.get("privileged_dim", 0),
                                      privileged_layer=m.get("privileged_layer", 0))


def factory(config, action_dim: int, num_embodiments: int, image_size: int):
  """`rngs -> model` for a full training config (its `model` and `data` sections), computing its matmuls in
  `config.compute_dtype` (parameters stay float32)."""
  make = _factory(config, action_dim, num_embodiments, image_size)
  dtype = config.get("compute_dtype", "float32")
  if dtype == "float32":
    return make
  if dtype not in layers.COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype={dtype!r}; valid: {list(layers.COMPUTE_DTYPES)}")
  return lambda rngs: layers.set_compute_dtype(make(rngs=rngs), dtype)


def _factory(config, action_dim: int, num_embodiments: int, image_size: int):
  name = check_name(config)
  if name in policies.POLICIES:
    return policies.factory(config, action_dim, num_embodiments, image_size)
  if name == "autoencoder":
    return functools.partial(autoencoder.VideoAutoencoder, autoencoder_config(config.model))
  video = video_config(config, image_size, num_embodiments)
  if name == "video_dit":
    return functools.partial(video_model.VideoModel, video)
  m, d = config.model, config.data
  proprio = embodiment_lib.proprio_width(d.proprio_dim, d.get("proprio_eef", False))
  # The future-state estimate fed beside the proprio widens the decoder's proprio input (vam.VamConfig).
  into_proprio = m.get("future_state_feed", False) and m.get("future_state_path", "memory") == "proprio"
  dec = action_decoder.DecoderConfig(**dict(m.decoder), action_dim=action_dim,
                                     proprio_dim=proprio * (1 + video.future_frames if into_proprio else 1),
                                     horizon=d.action_horizon, cond_dim=video.dit.width)
  cfg = vam.VamConfig(video=video, decoder=dec, layer=m.layer, tau_v_sampler=m.tau_v_sampler,
                      proprio_dropout=m.proprio_dropout, action_time_sampler=m.action_time_sampler,
                      action_loss=m.get("action_loss", "velocity"),
                      sample_steps=m.sample_steps, tau_v=m.tau_v, video_steps=m.video_steps,
                      mapped_weight=m.mapped_weight, tau_v_inference_fraction=m.get("tau_v_inference_fraction", 0.0),
                      feature_mlp=m.get("feature_mlp", False), privileged_dim=m.get("privileged_dim", 0),
                      privileged_aux=m.get("privileged_aux", 0.0),
                      privileged_feed=m.get("privileged_feed", False), keypoints=m.get("keypoints", 0),
                      keypoint_subcells=m.get("keypoint_subcells", 1), motion_tokens=m.get("motion_tokens", False),
                      context_dropout=m.get("context_dropout", 0.0), grid_keypoints=m.get("grid_keypoints", 0),
                      grid_channels=m.get("grid_channels", 32), future_state_aux=m.get("future_state_aux", 0.0),
                      future_state_feed=m.get("future_state_feed", False),
                      future_state_privileged=m.get("future_state_privileged", False),
                      future_state_path=m.get("future_state_path", "memory"), proprio_dim=proprio)
  return functools.partial(vam.VideoActionModel, cfg)


def input_keys(config) -> tuple[str, ...]:
  """The window keys the model's `loss` reads (the rest of a window stays on the host)."""
  name = check_name(config)
  if name in policies.POLICIES:
    return policies.input_keys(config.model)
  if name == "autoencoder":
    return ("images",)
  video_keys = video_model.LATENT_KEYS if config.data.get("use_latents", False) else video_model.PIXEL_KEYS
  if name != "vam":
    return video_keys + (("privileged",) if policies.reads_privileged_aux(config.model) else ())
  return (video_keys + vam.ACTION_KEYS + (("privileged",) if policies.reads_privileged_aux(config.model) else ()) +
          (vam.FUTURE_STATE_KEYS if config.model.get("future_state_aux", 0.0) > 0 else ()))


def frozen_pattern(config) -> str | None:
  """Regex over '/'-joined parameter paths that the optimizer must not update (None: train everything)."""
  return {"video_dit": video_model.FROZEN, "vam": vam.FROZEN}.get(check_name(config))


class Binder:
  """Turns a pure-dict params pytree back into the NNX module (pure: usable inside jit)."""

  def __init__(self, make_model):
    abstract = nnx.eval_shape(lambda: make_model(rngs=nnx.Rngs(0)))
    self.graphdef, self.abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
    if jax.tree.leaves(rest):
      raise ValueError(f"the model holds non-parameter state, which training does not carry: {rest}")

  def __call__(self, params) -> nnx.Module:
    state = jax.tree.map(lambda x: x, self.abstract_params)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)
