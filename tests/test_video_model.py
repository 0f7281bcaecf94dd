"""The latent video DiT and the stage-1 video model: shapes, layer-k hidden states, LoRA, learning, sampling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vam.models import autoencoder, layers, registry, text, video_dit, video_model


def _dit_cfg(**kw):
  base = dict(latent_channels=4, latent_size=(8, 8), frames=3, text_dim=16, num_embodiments=3, width=32, depth=3,
              heads=2, patch=2, time_dim=16)
  return video_dit.DiTConfig(**{**base, **kw})


def _dit_inputs(cfg, b=2, h_o=2, seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  h, w = cfg.latent_size
  ctx = jax.random.normal(k[0], (b, h_o, h, w, cfg.latent_channels))
  fut = jax.random.normal(k[1], (b, cfg.frames - h_o, h, w, cfg.latent_channels))
  words = jax.random.normal(k[2], (b, 5, cfg.text_dim))
  mask = jnp.array([[True] * 5, [True, True, False, False, False]])[:b]
  return ctx, fut, jax.random.uniform(k[3], (b,)), words, mask, jnp.arange(b) % 3


def _randomise(model, seed=1):
  """Non-zero values everywhere (zero-initialised gates would hide the blocks' work)."""
  graphdef, state = nnx.split(model)
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), len(jax.tree.leaves(state))))
  state = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(next(keys), x.shape), state)
  return nnx.merge(graphdef, state)


@pytest.mark.parametrize("kw", [dict(), dict(patch=4, heads=4, width=48, latent_size=(4, 8), frames=4, depth=1),
                                dict(scan_layers=True, remat=True)])
def test_dit_shapes(kw):
  cfg = _dit_cfg(**kw)
  dit = video_dit.VideoDiT(cfg, rngs=nnx.Rngs(0))
  ctx, fut, tau, words, mask, emb = _dit_inputs(cfg)
  run = nnx.jit(lambda m, *a, layer=None: m(*a, layer=layer), static_argnames="layer")
  v = run(dit, ctx, fut, tau, words, mask, emb)
  assert v.shape == fut.shape
  np.testing.assert_allclose(v, 0.0)  # zero-initialised output layer: the model starts at velocity 0
  h = run(dit, ctx, fut, tau, words, mask, emb, layer=1)
  assert h.shape == (2, cfg.frames * cfg.tokens_per_frame, cfg.width)


def test_patchify_round_trip():
  dit = video_dit.VideoDiT(_dit_cfg(latent_size=(4, 8)), rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 8, 4))
  np.testing.assert_array_equal(dit.unpatchify(dit.patchify(z)), z)


@pytest.mark.parametrize("scan", [False, True])
def test_hidden_states_of_layer_k_equal_a_full_pass(scan, monkeypatch):
  """`layer=k` against block k's output captured inside one full-depth forward pass (the blocks themselves
  record what they return; `layer=k` takes its own, shorter path through `_run_blocks`)."""
  loop = _randomise(video_dit.VideoDiT(_dit_cfg(), rngs=nnx.Rngs(0)))
  ctx, fut, tau, words, mask, emb = _dit_inputs(_dit_cfg())
  outputs = []
  block_call = video_dit.DiTBlock.__call__

  def recording(self, *args, **kw):
    out = block_call(self, *args, **kw)
    outputs.append(np.asarray(out))
    return out

  monkeypatch.setattr(video_dit.DiTBlock, "__call__", recording)
  velocity = loop(ctx, fut, tau, words, mask, emb)  # one full pass: depth outputs, in order
  monkeypatch.setattr(video_dit.DiTBlock, "__call__", block_call)
  assert len(outputs) == loop.cfg.depth
  dit = loop
  if scan:  # the same parameters stacked on a layer axis: layer=k slices the scan
    dit = video_dit.VideoDiT(_dit_cfg(scan_layers=True), rngs=nnx.Rngs(0))
    params = nnx.state(loop, nnx.Param).to_pure_dict()
    blocks = [params["blocks"][i] for i in range(loop.cfg.depth)]
    nnx.update(dit, _replaced(dit, dict(params, blocks=jax.tree.map(lambda *xs: jnp.stack(xs), *blocks))))
  for k in range(1, loop.cfg.depth + 1):
    h = dit(ctx, fut, tau, words, mask, emb, layer=k)
    np.testing.assert_allclose(h, outputs[k - 1].reshape(h.shape), atol=1e-5)
  assert not np.allclose(outputs[0], outputs[1])
  # One pass giving the velocity and the hidden states after block 2 (stage 1's privileged probe reads them).
  v, h2 = dit(ctx, fut, tau, words, mask, emb, also_hidden=2)
  np.testing.assert_allclose(v, velocity, atol=1e-5)
  np.testing.assert_allclose(h2, outputs[1].reshape(h2.shape), atol=1e-5)
  with pytest.raises(ValueError, match="layer=4"):
    dit(ctx, fut, tau, words, mask, emb, layer=4)


def test_scan_and_loop_layers_agree():
  loop = _randomise(video_dit.VideoDiT(_dit_cfg(), rngs=nnx.Rngs(0)))
  scan = video_dit.VideoDiT(_dit_cfg(scan_layers=True), rngs=nnx.Rngs(0))
  # Same parameters, stacked on a leading layer axis.
  params = nnx.state(loop, nnx.Param).to_pure_dict()
  blocks = [params["blocks"][i] for i in range(3)]
  stacked = dict(params, blocks=jax.tree.map(lambda *xs: jnp.stack(xs), *blocks))
  nnx.update(scan, _replaced(scan, stacked))
  ctx, fut, tau, words, mask, emb = _dit_inputs(_dit_cfg())
  np.testing.assert_allclose(scan(ctx, fut, tau, words, mask, emb), loop(ctx, fut, tau, words, mask, emb), atol=1e-5)


def _replaced(model, pure):
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, pure)
  return state


def test_rope_is_relative():
  """Rotated q.k depends only on the offset between positions."""
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 1, 1, 12))
  k = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 1, 12))
  def score(pq, pk):
    cq, sq = layers.rope_3d(jnp.array([pq]), 12)
    ck, sk = layers.rope_3d(jnp.array([pk]), 12)
    return float(jnp.sum(layers.apply_rope(q, cq, sq) * layers.apply_rope(k, ck, sk)))
  assert score((1, 2, 3), (0, 1, 1)) == pytest.approx(score((4, 5, 6), (3, 4, 4)), rel=1e-4)
  assert score((1, 2, 3), (0, 1, 1)) != pytest.approx(score((1, 2, 3), (0, 2, 1)), rel=1e-3)


def test_lora_trains_adapters_and_leaves_the_base_untouched():
  cfg = _dit_cfg(lora_rank=4)
  dit = _randomise(video_dit.VideoDiT(dataclasses.replace(cfg, lora_rank=0), rngs=nnx.Rngs(0)))
  base = nnx.state(dit, nnx.Param).to_pure_dict()
  lora = video_dit.VideoDiT(cfg, rngs=nnx.Rngs(0))
  state = nnx.state(lora, nnx.Param)
  flat = dict(nnx.to_flat_state(state))
  paths = {"/".join(map(str, p)) for p in flat}
  assert any(p.endswith("q/lora_a") for p in paths) and any(p.endswith("fc1/lora_b") for p in paths)
  # Load the pretrained (rank-0) params into the LoRA model: every base path exists in both.
  base_flat = {"/".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(dit, nnx.Param))}
  for p, v in flat.items():
    key = "/".join(map(str, p))
    if key in base_flat:
      v.value = base_flat[key].value
  ctx, fut, tau, words, mask, emb = _dit_inputs(cfg)
  np.testing.assert_allclose(lora(ctx, fut, tau, words, mask, emb), dit(ctx, fut, tau, words, mask, emb), atol=1e-6)

  trainable = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("lora_a"), nnx.PathContains("lora_b")))
  opt = nnx.Optimizer(lora, optax.adam(1e-2), wrt=trainable)
  target = jax.random.normal(jax.random.PRNGKey(5), fut.shape)
  loss = lambda m: jnp.mean(jnp.square(m(ctx, fut, tau, words, mask, emb) - target))
  before = float(loss(lora))

  @nnx.jit
  def step(model, opt):
    opt.update(model, nnx.grad(loss, argnums=nnx.DiffState(0, trainable))(model))

  for _ in range(5):
    step(lora, opt)
  assert float(loss(lora)) < before
  after = nnx.state(lora, nnx.Param).to_pure_dict()
  jax.tree.map(np.testing.assert_array_equal, _strip_lora(after), base)


def _strip_lora(tree):
  if isinstance(tree, dict):
    return {k: _strip_lora(v) for k, v in tree.items() if k not in ("lora_a", "lora_b")}
  return tree


def _video_cfg(**dit_kw):
  ae = autoencoder.AutoencoderConfig(patch=4, width=16, blocks=1, latent_channels=4)
  txt = text.TextConfig(width=16, depth=1, heads=2, text_len=16)
  dit = _dit_cfg(**{"text_dim": 16, "frames": 3, **dit_kw})
  return video_model.VideoModelConfig(ae, txt, dit, context_frames=2, future_frames=1, sample_steps=4)


def _video_batch(b=4, seed=0):
  """Squares sliding right by 2 px per frame, 32x32: context 2 frames, future 1."""
  rng = np.random.default_rng(seed)
  video = np.zeros((b, 3, 32, 32, 3), np.uint8)
  for i in range(b):
    x, y = rng.integers(0, 16, 2)
    for f in range(3):
      video[i, f, y:y + 8, x + 2 * f:x + 2 * f + 8] = 200
  instr = np.zeros((b, 16), np.uint8)
  instr[:, :4] = np.frombuffer(b"move", np.uint8)
  return dict(images=video[:, :2], future_images=video[:, 2:], future_mask=np.ones((b, 1), bool),
              instruction=instr, embodiment_id=np.zeros((b,), np.int32))


def test_video_model_learns_and_samples():
  model = video_model.VideoModel(_video_cfg(), rngs=nnx.Rngs(0))
  batch = {k: jnp.asarray(v) for k, v in _video_batch().items()}
  mean, std, residual = model.calibrate(batch)
  assert mean.shape == std.shape == residual.shape == (4,) and bool(jnp.all(std > 0)) and bool(jnp.all(residual > 0))
  trainable = nnx.Not(nnx.PathContains("autoencoder"))
  opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.All(nnx.Param, trainable))
  ae_before = nnx.state(model.autoencoder, nnx.Param).to_pure_dict()

  @nnx.jit
  def step(model, opt, rng):
    (loss, _), grads = nnx.value_and_grad(lambda m: m.loss(batch, rng), has_aux=True,
                                          argnums=nnx.DiffState(0, nnx.All(nnx.Param, trainable)))(model)
    opt.update(model, grads)
    return loss

  losses = [float(step(model, opt, jax.random.PRNGKey(i))) for i in range(30)]
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model.autoencoder, nnx.Param).to_pure_dict(), ae_before)

  sample = nnx.jit(lambda m, rng, tau_stop: m.sample(batch, rng, num_steps=3, tau_stop=tau_stop))
  z = sample(model, jax.random.PRNGKey(0), 0.0)
  assert z.shape == (4, 1, 8, 8, 4) and bool(jnp.all(jnp.isfinite(z)))
  early = sample(model, jax.random.PRNGKey(0), 0.5)
  assert not np.allclose(early, z)
  frames = nnx.jit(lambda m, z: m.decode(z))(model, z)
  assert frames.shape == (4, 1, 32, 32, 3) and float(jnp.max(jnp.abs(frames))) <= 1.0
  h = nnx.jit(lambda m: m.hidden_states(batch, jnp.full((4,), 0.5), 2, jax.random.PRNGKey(0)))(model)
  assert h.shape == (4, 3 * 16, 32)
  per_example = nnx.jit(lambda m: m.loss_at(batch, jnp.full((4,), 0.5), jnp.zeros((4, 1, 8, 8, 4))))(model)
  assert per_example.shape == (4,)


def test_privileged_probe_of_the_video_model():
  """Stage 1's privileged probe: the loss adds the probe's error on the hidden states after block
  `privileged_layer`, whose gradient reaches the DiT blocks up to that one; a layer outside the DiT is refused."""
  batch = {k: jnp.asarray(v) for k, v in _video_batch().items()}
  batch["privileged"] = jax.random.normal(jax.random.PRNGKey(0), (4, 5))
  cfg = dataclasses.replace(_video_cfg(), privileged_aux=2.0, privileged_dim=5, privileged_layer=2)
  model = video_model.VideoModel(cfg, rngs=nnx.Rngs(0))
  loss, metrics = nnx.jit(lambda m: m.loss(batch, jax.random.PRNGKey(1)))(model)
  np.testing.assert_allclose(float(loss), float(metrics["flow_loss"]) + 2.0 * float(metrics["privileged_mse"]),
                             rtol=1e-5)
  plain = video_model.VideoModel(_video_cfg(), rngs=nnx.Rngs(0))
  np.testing.assert_allclose(float(metrics["flow_loss"]),
                             float(nnx.jit(lambda m: m.loss(batch, jax.random.PRNGKey(1))[0])(plain)), rtol=1e-5)
  probe_grad = nnx.jit(nnx.grad(lambda m: m.loss(batch, jax.random.PRNGKey(1))[1]["privileged_mse"]))(model)
  block = lambda i: max(float(jnp.abs(x).max()) for x in jax.tree.leaves(probe_grad["dit"]["blocks"][i]))
  assert block(0) > 0 and block(2) == 0.0  # blocks 1-2 shape what the VAM reads; block 3 is past it
  with pytest.raises(ValueError, match="privileged_layer"):
    video_model.VideoModel(dataclasses.replace(cfg, privileged_layer=4), rngs=nnx.Rngs(0))


def test_registry_builds_every_model():
  import ml_collections
  c = ml_collections.ConfigDict(dict(
      model=dict(name="video_dit", autoencoder=dict(patch=4, width=16, blocks=1, latent_channels=4,
                                                     temporal_factor=1, latent_l2=1e-3),
                 text=dict(width=16, depth=1, heads=2, text_len=16),
                 dit=dict(width=32, depth=2, heads=2, patch=2), time_sampler="logit_normal", time_mean=0.0,
                 time_std=1.0, time_uniform=0.1, sample_steps=4, predict_residual=True, velocity_skip=True),
      data=dict(context_frames=2, future_frames=1, use_latents=False)))
  model = registry.factory(c, 0, 3, 32)(rngs=nnx.Rngs(0))
  assert isinstance(model, video_model.VideoModel) and model.cfg.dit.latent_size == (8, 8)
  assert registry.input_keys(c) == video_model.PIXEL_KEYS
  c.model.name = "autoencoder"
  assert isinstance(registry.factory(c, 0, 3, 32)(rngs=nnx.Rngs(0)), autoencoder.VideoAutoencoder)
  c.model.name = "nope"
  with pytest.raises(ValueError, match="config.model.name='nope'"):
    registry.factory(c, 0, 3, 32)


def test_frozen_parameters_of_the_video_model():
  """The autoencoder and the calibrated latent statistics never train; everything else does."""
  from vam.train import optim
  abstract = nnx.eval_shape(lambda: video_model.VideoModel(_video_cfg(), rngs=nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param).to_pure_dict()
  mask = optim.trainable_mask(params, video_model.FROZEN)
  for key in ("autoencoder", "latent_mean", "latent_std", "residual_std"):
    assert not any(jax.tree.leaves(mask[key])), key
  for key in ("dit", "text"):
    assert all(jax.tree.leaves(mask[key])), key
  with pytest.raises(ValueError, match="no parameter is trainable"):  # a LoRA regex on a model without LoRA
    optim.trainable_mask(params, video_model.FROZEN, "lora_")
