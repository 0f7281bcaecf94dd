"""The video-action model's oracle path reads the future it claims to read (README "Does the decoder read the
future?"): `sample_with_future` depends on the window's true future and on tau_v, computes exactly the features
training computes, and the inference path (`sample`) never reads a future in the batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vam.models import action_decoder, autoencoder, text, vam, video_dit, video_model

H_O, H_F, LATENT, C, A = 2, 2, 8, 4, 6


def _model(keypoints: int = 2) -> vam.VideoActionModel:
  """A small VAM whose every parameter is random (zero-initialised gates and output layers opened): a decoder
  that ignores its memory would then be a property of the code path, not of the initialisation."""
  dit = video_dit.DiTConfig(latent_channels=C, latent_size=(LATENT, LATENT), frames=H_O + H_F, text_dim=16,
                            num_embodiments=2, width=32, depth=2, heads=2, patch=2, time_dim=16)
  video = video_model.VideoModelConfig(autoencoder=autoencoder.AutoencoderConfig(patch=4, width=8, blocks=1,
                                                                                 latent_channels=C),
                                       text=text.TextConfig(width=16, depth=1, heads=2, text_len=8), dit=dit,
                                       context_frames=H_O, future_frames=H_F)
  dec = action_decoder.DecoderConfig(action_dim=A, proprio_dim=5, horizon=4, cond_dim=32, width=32, depth=1,
                                     heads=2, time_dim=16, bilinear_rank=4)
  model = vam.VideoActionModel(vam.VamConfig(video=video, decoder=dec, layer=2, feature_mlp=True,
                                             keypoints=keypoints, proprio_dropout=0.0), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  leaves = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def _batch(seed: int = 0, b: int = 3) -> dict:
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  return dict(context_latents=jax.random.normal(k[0], (b, H_O, LATENT, LATENT, C)),
              future_latents=jax.random.normal(k[1], (b, H_F, LATENT, LATENT, C)),
              instruction=jax.random.randint(k[2], (b, 8), 0, 255).astype(jnp.uint8),
              embodiment_id=jnp.zeros((b,), jnp.int32), proprio=jax.random.normal(k[3], (b, 5)),
              actions=jnp.zeros((b, 4, A)), action_mask=jnp.ones((b, 4, A), bool),
              mapped_mask=jnp.zeros((b, 4, A), bool))


def test_oracle_reads_the_true_future_and_inference_never_does():
  model, batch = _model(), _batch()
  other = dict(batch, future_latents=jnp.roll(batch["future_latents"], 1, axis=0))
  rng = jax.random.PRNGKey(7)
  oracle = lambda b, tau_v: np.asarray(model.sample_with_future(b, rng, num_steps=3, tau_v=tau_v))
  true0, other0 = oracle(batch, 0.0), oracle(other, 0.0)
  assert np.abs(true0 - other0).mean() > 1e-3  # another window's future changes the chunk
  assert np.abs(true0 - oracle(batch, 0.5)).mean() > 1e-3  # tau_v changes it
  # At tau_v = 1 the future is pure noise: which window's future was noised no longer matters.
  np.testing.assert_allclose(oracle(batch, 1.0), oracle(other, 1.0), atol=1e-5)
  # The inference path imagines its future from noise: a future in the batch is never read (what the
  # mislabelled "true future" rows of earlier reports measured).
  infer = lambda b: np.asarray(model.sample(b, rng, num_steps=3, tau_v=0.0))
  np.testing.assert_array_equal(infer(batch), infer(other))


def test_oracle_features_are_the_features_training_computes():
  """With training's tau_v pinned to 0 (every sample at the inference tau_v = 0), the decoder memory the loss
  builds for a batch equals the one `sample_with_future(tau_v=0)` reads for it."""
  model, batch = _model(), _batch(seed=3)
  model.cfg = vam.VamConfig(**{**model.cfg.__dict__, "tau_v": 0.0, "tau_v_inference_fraction": 1.0})
  seen = []
  original = model.training_features

  def spy(b, tau_v, rng):
    out = original(b, tau_v, rng)
    seen.append((np.asarray(tau_v), np.asarray(out)))
    return out

  model.training_features = spy
  model.loss(batch, jax.random.PRNGKey(0))
  model.sample_with_future(batch, jax.random.PRNGKey(5), num_steps=2, tau_v=0.0)
  (tau_train, f_train), (tau_oracle, f_oracle) = seen
  np.testing.assert_array_equal(tau_train, 0.0)
  np.testing.assert_array_equal(tau_oracle, 0.0)
  np.testing.assert_allclose(f_train, f_oracle, atol=1e-6)
  # ... and they carry the future: the future frames' features change with it.
  f_other = np.asarray(original(dict(batch, future_latents=batch["future_latents"][::-1]), jnp.zeros(3),
                                jax.random.PRNGKey(0)))
  per_frame = f_oracle.shape[1] // (H_O + H_F)
  assert np.abs(f_other - f_oracle)[:, H_O * per_frame:].mean() > 1e-2


def test_motion_tokens_and_context_dropout_hide_what_they_say():
  """The motion readout adds H_f x P motion tokens and their keypoints; the context-dropout mask hides exactly the
  context frames' tokens and keypoints, and a decoder reading a hidden memory entry does not depend on it."""
  model, batch = _model(keypoints=2), _batch()
  model = _with(model, motion_tokens=True)
  features = model.training_features(batch, jnp.zeros(3), jax.random.PRNGKey(0))
  p = model.cfg.video.dit.tokens_per_frame
  tokens = model.tokens(features)
  assert tokens.shape[1] == (H_O + H_F) * p + (H_O + H_F) * 2 + H_F * p + H_F * 2
  mask = np.asarray(model.memory_mask(tokens.shape[1], jnp.asarray([True, False, True])))
  context = np.zeros(tokens.shape[1], bool)
  context[:H_O * p] = True  # the context frames' features ...
  context[(H_O + H_F) * p:(H_O + H_F) * p + H_O * 2] = True  # ... and their keypoints
  np.testing.assert_array_equal(mask[0], ~context)
  assert mask[1].all()
  # Changing what is hidden changes nothing the decoder computes.
  noise = jax.random.normal(jax.random.PRNGKey(4), tokens.shape) * jnp.asarray(context)[None, :, None]
  run = lambda memory: np.asarray(model.decoder(jnp.ones((3, 4, A)), jnp.full((3,), 0.5), batch["proprio"], memory,
                                                cond_mask=jnp.asarray(mask), tau_v=jnp.zeros(3)))
  a, b = run(tokens), run(tokens + noise)
  np.testing.assert_allclose(a[0], b[0], atol=1e-5)
  assert np.abs(a[1] - b[1]).mean() > 1e-3  # a sample that sees its context does depend on it
  loss, _ = _with(model, context_dropout=0.5).loss(batch, jax.random.PRNGKey(1))
  assert np.isfinite(float(loss))


def _with(model, **changes):
  """The same parameters under a changed config: a new model of that config, the old parameters copied in where
  their paths exist."""
  cfg = vam.VamConfig(**{**model.cfg.__dict__, **changes})
  fresh = vam.VideoActionModel(cfg, rngs=nnx.Rngs(0))
  old = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  state = nnx.state(fresh, nnx.Param)
  flat = nnx.to_flat_state(state)
  for path, var in flat:
    if path in old and old[path].value.shape == var.value.shape:
      var.value = old[path].value
  nnx.update(fresh, nnx.from_flat_state(flat))
  return fresh


def test_grid_keypoints_read_the_tokens_at_the_latent_resolution():
  """GridKeypoints unpatchifies each token into its p x p cells in place (the DiT's own patch layout), and the
  context-dropout mask covers its context-frame keypoints too."""
  model = _with(_model(keypoints=2), grid_keypoints=3)
  grid = model.grid_keypoints
  dit = model.cfg.video.dit
  tokens = jax.random.normal(jax.random.PRNGKey(0), (2, dit.frames * dit.tokens_per_frame, 32))
  maps = np.asarray(grid.feature_maps(tokens))
  assert maps.shape == (2, dit.frames, LATENT, LATENT, grid.channels)
  # Token (frame 1, row 1, column 2)'s cells sit at rows 2-3, columns 4-5 of frame 1's map.
  gh, gw = dit.grid
  one = np.asarray(grid.unpatch(tokens[:, 1 * gh * gw + 1 * gw + 2])).reshape(2, 2, 2, grid.channels)
  np.testing.assert_allclose(maps[:, 1, 2:4, 4:6], one, atol=1e-5)
  features = model.training_features(_batch(b=2), jnp.zeros(2), jax.random.PRNGKey(0))
  memory = model.tokens(features)
  p = dit.tokens_per_frame
  assert memory.shape[1] == dit.frames * (p + 2 + 3)
  mask = np.asarray(model.memory_mask(memory.shape[1], jnp.asarray([True, False])))[0]
  start = dit.frames * (p + 2)  # the grid keypoints follow the features and the token keypoints
  assert not mask[start:start + H_O * 3].any() and mask[start + H_O * 3:].all()


def test_future_state_probe_feeds_the_decoder_its_estimate():
  """The future-state probe regresses the proprio at each future frame from the decoder's tokens and, with
  `future_state_feed`, appends its estimate as H_f memory tokens; without labelled frames its loss is zero."""
  model = _with(_model(keypoints=2), future_state_aux=1.0, future_state_feed=True)
  batch = dict(_batch(), future_proprio=jax.random.normal(jax.random.PRNGKey(9), (3, H_F, 5)),
               future_mask=jnp.ones((3, H_F), bool))
  features = model.training_features(batch, jnp.zeros(3), jax.random.PRNGKey(0))
  tokens = model.tokens(features)
  assert model.memory(features).shape[1] == tokens.shape[1] + H_F
  assert model.future_state.estimate(tokens).shape == (3, H_F, 5)
  _, metrics = model.loss(batch, jax.random.PRNGKey(1))
  assert float(metrics["future_state_mse"]) > 0
  _, metrics = model.loss(dict(batch, future_mask=jnp.zeros((3, H_F), bool)), jax.random.PRNGKey(1))
  assert float(metrics["future_state_mse"]) == 0.0
  assert np.isfinite(np.asarray(model.sample_with_future(batch, jax.random.PRNGKey(2), num_steps=2))).all()
  # The privileged-future diagnostic feeds the window's true future proprio in place of the estimate.
  rung = _with(model, future_state_privileged=True)
  a = np.asarray(rung.sample_with_future(batch, jax.random.PRNGKey(2), num_steps=2))
  b = np.asarray(rung.sample_with_future(dict(batch, future_proprio=-batch["future_proprio"]), jax.random.PRNGKey(2),
                                         num_steps=2))
  assert np.abs(a - b).mean() > 1e-3
  with pytest.raises(ValueError, match="future_proprio"):
    rung.sample({k: v for k, v in batch.items() if k != "future_proprio"}, jax.random.PRNGKey(2), num_steps=2)
  # ... or beside the proprio: the decoder's proprio token reads (1 + H_f) proprio vectors, no extra tokens.
  cfg = vam.VamConfig(**{**model.cfg.__dict__, "future_state_path": "proprio", "future_state_privileged": True,
                         "proprio_dim": 5,
                         "decoder": action_decoder.DecoderConfig(**{**model.cfg.decoder.__dict__,
                                                                    "proprio_dim": 5 * (1 + H_F)})})
  beside = vam.VideoActionModel(cfg, rngs=nnx.Rngs(0))
  assert beside.memory(features).shape[1] == tokens.shape[1]
  np.testing.assert_allclose(np.asarray(beside.decoder_proprio(batch, tokens)),
                             np.concatenate([batch["proprio"], batch["future_proprio"].reshape(3, -1)], axis=-1))
  assert np.isfinite(float(beside.loss(batch, jax.random.PRNGKey(1))[0]))
