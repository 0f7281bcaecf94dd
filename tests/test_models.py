import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vam.models import action_decoder


def _decoder():
  cfg = action_decoder.DecoderConfig(action_dim=56, proprio_dim=17, horizon=8, cond_dim=32, width=64, depth=2, heads=4)
  return cfg, action_decoder.ActionDecoder(cfg, rngs=nnx.Rngs(0))


def test_decoder_shapes_zero_init_and_grads():
  cfg, model = _decoder()
  b = 3
  x, tau = jnp.ones((b, cfg.horizon, cfg.action_dim)), jnp.array([0.1, 0.5, 0.9])
  proprio, cond = jnp.ones((b, cfg.proprio_dim)), jnp.ones((b, 5, cfg.cond_dim))
  out = nnx.jit(lambda m: m(x, tau, proprio, cond))(model)
  assert out.shape == (b, cfg.horizon, cfg.action_dim)
  np.testing.assert_allclose(out, 0.0)  # zero-initialised output layer

  def loss(m):
    return jnp.mean((m(x, tau, proprio, cond, tau_v=tau, proprio_dropped=jnp.array([True, False, True])) - 1) ** 2)
  grads = nnx.jit(nnx.grad(loss))(model)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert float(jnp.abs(grads.out.kernel.value).sum()) > 0


def test_cond_mask_hides_tokens():
  cfg, model = _decoder()
  # Make the decoder depend on its inputs (the zero-initialised gates/output would hide everything).
  graphdef, state = nnx.split(model)
  model = nnx.merge(graphdef, jax.tree.map(lambda p: p + 0.05, state))
  x, tau, proprio = jnp.ones((1, cfg.horizon, cfg.action_dim)), jnp.array([0.3]), jnp.ones((1, cfg.proprio_dim))
  cond = jax.random.normal(jax.random.PRNGKey(0), (1, 4, cfg.cond_dim))
  mask = jnp.array([[True, True, False, False]])
  run = nnx.jit(lambda m, cond: m(x, tau, proprio, cond, cond_mask=mask))
  a = run(model, cond)
  b = run(model, cond.at[:, 2:].set(99.0))
  np.testing.assert_allclose(a, b, atol=1e-5)
  other = jax.random.normal(jax.random.PRNGKey(1), (1, 2, cfg.cond_dim))  # a different direction (QK-RMSNorm)
  c = run(model, cond.at[:, :2].set(other))
  assert float(jnp.abs(a - c).max()) > 1e-4


def test_image_baseline_loss_and_sample():
  from vam.models import encoders, policies
  enc = encoders.EncoderConfig(width=32, depth=1, heads=2, patch=16, image_size=32, frames=2, text_len=16)
  dec = action_decoder.DecoderConfig(action_dim=10, proprio_dim=5, horizon=4, cond_dim=32, width=32, depth=1, heads=2)
  model = policies.ImageBaseline(policies.PolicyConfig(enc, dec), rngs=nnx.Rngs(0))
  b = 2
  batch = dict(images=jnp.zeros((b, 2, 32, 32, 3), jnp.uint8), instruction=jnp.zeros((b, 16), jnp.uint8).at[:, :3].set(65),
               embodiment_id=jnp.array([0, 2]), proprio=jnp.ones((b, 5)), actions=jnp.ones((b, 4, 10)),
               action_mask=jnp.ones((b, 4, 10), bool).at[:, :, 7:].set(False))
  (loss, metrics), grads = nnx.jit(nnx.value_and_grad(lambda m: m.loss(batch, jax.random.PRNGKey(1)), has_aux=True))(model)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  out = nnx.jit(lambda m: m.sample(batch, jax.random.PRNGKey(2), num_steps=3))(model)
  assert out.shape == (b, 4, 10)
  # The sampling temperature: 1 is the default; 0 starts every sample at the origin, so the seed is irrelevant.
  sample = nnx.jit(lambda m, rng, s: m.sample(batch, rng, num_steps=3, noise_scale=s))
  np.testing.assert_allclose(sample(model, jax.random.PRNGKey(2), 1.0), out, atol=1e-6)
  cold = [np.asarray(sample(model, jax.random.PRNGKey(k), 0.0)) for k in (2, 3)]
  np.testing.assert_allclose(cold[0], cold[1], atol=1e-6)
  assert float(np.abs(cold[0] - np.asarray(out)).max()) > 1e-4


def test_privileged_auxiliary_loss_trains_the_image_encoder():
  """`privileged_aux`: the image features regress the privileged state (training only); the loss adds it, its
  gradient reaches the encoder, sampling never reads the state, and it needs the state's width."""
  from vam.models import encoders, policies
  enc = encoders.EncoderConfig(kind="conv", width=16, image_size=32, frames=1, channels=(8, 16), groups=4,
                               keypoints=4, text_len=16)
  dec = action_decoder.DecoderConfig(action_dim=6, proprio_dim=3, horizon=2, cond_dim=16, width=16, depth=1, heads=2)
  b = 2
  batch = dict(images=jax.random.randint(jax.random.PRNGKey(0), (b, 1, 32, 32, 3), 0, 255).astype(jnp.uint8),
               instruction=jnp.zeros((b, 16), jnp.uint8), embodiment_id=jnp.array([0, 1]), proprio=jnp.ones((b, 3)),
               actions=jnp.ones((b, 2, 6)), action_mask=jnp.ones((b, 2, 6), bool), privileged=jnp.ones((b, 5)))
  plain = policies.ImageBaseline(policies.PolicyConfig(enc, dec, privileged_dim=5), rngs=nnx.Rngs(0))
  aux = policies.ImageBaseline(policies.PolicyConfig(enc, dec, privileged_dim=5, privileged_aux=2.0), rngs=nnx.Rngs(0))
  grad = nnx.jit(nnx.grad(lambda m: m.loss(batch, jax.random.PRNGKey(1)), has_aux=True))
  (l0, m0), (l1, m1) = [nnx.jit(lambda m: m.loss(batch, jax.random.PRNGKey(1)))(m) for m in (plain, aux)]
  assert "privileged_mse" not in m0 and float(m1["privileged_mse"]) > 0
  np.testing.assert_allclose(float(l1), float(m1["flow_loss"]) + 2.0 * float(m1["privileged_mse"]), rtol=1e-5)
  # The encoder's gradient differs only by the auxiliary term (the flow part is identical: same init, same rng).
  g0, g1 = grad(plain)[0]["images"], grad(aux)[0]["images"]
  diff = jax.tree.map(lambda a, c: float(jnp.abs(a - c).max()), g0, g1)
  assert max(jax.tree.leaves(diff)) > 1e-6
  no_state = {k: v for k, v in batch.items() if k != "privileged"}
  assert nnx.jit(lambda m: m.sample(no_state, jax.random.PRNGKey(2), num_steps=2))(aux).shape == (b, 2, 6)
  with np.testing.assert_raises(ValueError):
    policies.ImageBaseline(policies.PolicyConfig(enc, dec, privileged_aux=1.0), rngs=nnx.Rngs(0))


def test_privileged_feed_gives_the_decoder_the_estimate_not_the_state():
  """`privileged_feed`: the decoder reads one more token, the probe's estimate of the state from the images; the
  action loss does not train the estimator (its gradient stops at the estimate), sampling never reads the true
  state, and a feed without a probe is refused."""
  from vam.models import encoders, policies
  enc = encoders.EncoderConfig(kind="conv", width=16, image_size=32, frames=1, channels=(8, 16), groups=4,
                               keypoints=4, text_len=16)
  # Gates open at initialisation (adaLN-zero would give the memory no gradient at step 0).
  dec = action_decoder.DecoderConfig(action_dim=6, proprio_dim=3, horizon=2, cond_dim=16, width=16, depth=1, heads=2,
                                     gate_init=0.5)
  b = 2
  batch = dict(images=jax.random.randint(jax.random.PRNGKey(0), (b, 1, 32, 32, 3), 0, 255).astype(jnp.uint8),
               instruction=jnp.zeros((b, 16), jnp.uint8), embodiment_id=jnp.array([0, 1]), proprio=jnp.ones((b, 3)),
               actions=jnp.ones((b, 2, 6)), action_mask=jnp.ones((b, 2, 6), bool), privileged=jnp.ones((b, 5)))
  cfg = lambda **kw: policies.PolicyConfig(enc, dec, privileged_dim=5, privileged_aux=1.0, **kw)
  plain, fed = (policies.ImageBaseline(cfg(privileged_feed=f), rngs=nnx.Rngs(0)) for f in (False, True))
  (c0, _), (c1, _) = (nnx.jit(lambda m: m.condition(batch))(m) for m in (plain, fed))
  assert c1.shape[1] == c0.shape[1] + 1
  # As after a few steps: the zero-initialised output layer would give nothing upstream a gradient.
  fed.decoder.out.kernel.value = 0.1 * jax.random.normal(jax.random.PRNGKey(3), fed.decoder.out.kernel.value.shape)
  flow_grad = nnx.jit(nnx.grad(lambda m: m.loss(batch, jax.random.PRNGKey(1))[1]["flow_loss"]))(fed)
  biggest = lambda tree: max(float(jnp.abs(x).max()) for x in jax.tree.leaves(tree))
  assert biggest(flow_grad["probe"]["head"]) == 0.0 and biggest(flow_grad["probe"]["feed_in"]) > 0
  no_state = {k: v for k, v in batch.items() if k != "privileged"}
  assert nnx.jit(lambda m: m.sample(no_state, jax.random.PRNGKey(2), num_steps=2))(fed).shape == (b, 2, 6)
  with np.testing.assert_raises(ValueError):
    policies.ImageBaseline(policies.PolicyConfig(enc, dec, privileged_dim=5, privileged_feed=True), rngs=nnx.Rngs(0))


def test_conv_encoder_readouts_and_random_shift():
  from vam.models import encoders
  images = jax.random.randint(jax.random.PRNGKey(0), (2, 2, 32, 32, 3), 0, 255).astype(jnp.uint8)
  for readout, n in (("keypoints", 6), ("grid", 16)):
    cfg = encoders.EncoderConfig(kind="conv", width=16, image_size=32, frames=2, channels=(8, 8, 16), groups=4,
                                 readout=readout, keypoints=6)
    enc = encoders.make_image_encoder(cfg, rngs=nnx.Rngs(0))
    assert nnx.jit(lambda m: m(images))(enc).shape == (2, 2 * n, 16)
  shifted = encoders.random_shift(images, jax.random.PRNGKey(3), 4)
  assert shifted.shape == images.shape and shifted.dtype == images.dtype
  assert not np.array_equal(np.asarray(shifted), np.asarray(images))
  # One shift per sample, shared by its frames (consistent motion between the context frames).
  same = jnp.repeat(images[:, :1], 2, axis=1)
  out = encoders.random_shift(same, jax.random.PRNGKey(3), 4)
  np.testing.assert_array_equal(np.asarray(out[:, 0]), np.asarray(out[:, 1]))
  np.testing.assert_array_equal(np.asarray(encoders.random_shift(images, jax.random.PRNGKey(3), 0)), images)


def test_token_keypoints_find_the_token_that_stands_out():
  """`layers.TokenKeypoints`: per frame, the soft-argmax lands on the token whose score stands out, at its
  (x, y) on the row-major grid, moved by at most half the token spacing by its offset; pooled = that token."""
  from vam.models import layers
  f, (h, w), d = 2, (4, 4), 8
  kp = layers.TokenKeypoints(d, 1, f, (h, w), rngs=nnx.Rngs(0))
  kernel = np.zeros((d, 3), np.float32)
  kernel[0, 0] = 50.0  # score: feature 0
  kernel[1, 1] = 10.0  # x offset: tanh(10 * feature 1)
  kp.score.kernel.value, kp.score.bias.value = jnp.asarray(kernel), jnp.zeros(3)
  tokens = np.zeros((1, f, h * w, d), np.float32)
  tokens[0, 0, 1 * w + 2, 0] = 1.0  # frame 0: row 1, column 2
  tokens[0, 1, 3 * w + 0, :2] = 1.0  # frame 1: row 3, column 0, offset to the right
  points, pooled = kp.points(jnp.asarray(tokens.reshape(1, f * h * w, d)))
  np.testing.assert_allclose(np.asarray(points[0, 0, 0]), [2 / 3 * 2 - 1, 1 / 3 * 2 - 1], atol=1e-3)
  np.testing.assert_allclose(np.asarray(points[0, 1, 0]), [-1 + 1 / 3, 1.0], atol=1e-3)
  np.testing.assert_allclose(np.asarray(pooled[0, 1, 0]), tokens[0, 1, 3 * w], atol=1e-3)
  assert kp(jnp.asarray(tokens.reshape(1, -1, d))).shape == (1, f, d)
  with pytest.raises(ValueError, match="tokens"):
    kp.points(jnp.zeros((1, 5, d)))


def test_token_keypoints_subcells_place_a_keypoint_within_its_token():
  """`subcells` = s: each token scores an s x s sub-grid; per frame and keypoint the soft-argmax lands on the
  standing-out sub-cell's centre (a position the 4 x 4 token grid alone cannot express), and the pooled feature
  is that sub-cell's token."""
  from vam.models import layers
  f, (h, w), d, s, k = 2, (4, 4), 8, 4, 2
  kp = layers.TokenKeypoints(d, k, f, (h, w), subcells=s, rngs=nnx.Rngs(0))
  kernel = np.zeros((d, k * s * s), np.float32)  # output channel: keypoint * s * s + sub-cell (row * s + column)
  kernel[0, 0 * s * s + 1 * s + 3] = 50.0  # keypoint 0: feature 0 scores sub-cell (row 1, column 3)
  kernel[1, 1 * s * s + 2 * s + 0] = 50.0  # keypoint 1: feature 1 scores sub-cell (row 2, column 0)
  kp.score.kernel.value, kp.score.bias.value = jnp.asarray(kernel), jnp.zeros(k * s * s)
  tokens = np.zeros((1, f, h * w, d), np.float32)
  tokens[0, 0, 2 * w + 1, 0] = 1.0  # frame 0, keypoint 0: the token at row 2, column 1
  tokens[0, 0, 0 * w + 3, 1] = 1.0  # frame 0, keypoint 1: row 0, column 3
  tokens[0, 1, 3 * w + 2, 0] = 1.0  # frame 1, keypoint 0: row 3, column 2
  points, pooled = kp.points(jnp.asarray(tokens.reshape(1, f * h * w, d)))
  step = 2 / 3  # between token centres
  at = lambda row, col, sub_row, sub_col: [-1 + col * step + ((sub_col + 0.5) / s - 0.5) * step,
                                           -1 + row * step + ((sub_row + 0.5) / s - 0.5) * step]
  np.testing.assert_allclose(np.asarray(points[0, 0, 0]), at(2, 1, 1, 3), atol=1e-3)
  np.testing.assert_allclose(np.asarray(points[0, 0, 1]), at(0, 3, 2, 0), atol=1e-3)
  np.testing.assert_allclose(np.asarray(points[0, 1, 0]), at(3, 2, 1, 3), atol=1e-3)
  np.testing.assert_allclose(np.asarray(pooled[0, 0, 0]), tokens[0, 0, 2 * w + 1], atol=1e-3)
  np.testing.assert_allclose(np.asarray(pooled[0, 1, 0]), tokens[0, 1, 3 * w + 2], atol=1e-3)
  cells = np.asarray(kp._cell_coordinates())  # (h w, s s, 2): each token's sub-cells centred on the token
  np.testing.assert_allclose(cells.mean(axis=1), np.asarray(layers.grid_coordinates(h, w)), atol=1e-6)
  assert len(np.unique(np.round(cells.reshape(-1, 2), 5), axis=0)) == h * w * s * s
  assert kp(jnp.asarray(tokens.reshape(1, -1, d))).shape == (1, f * k, d)
  with pytest.raises(ValueError, match="subcells"):
    layers.TokenKeypoints(d, 1, f, (h, w), subcells=0, rngs=nnx.Rngs(0))


def test_state_policy_and_global_conditioning():
  from vam.models import encoders, policies
  enc = encoders.EncoderConfig(width=32, heads=2, text_len=16)
  dec = action_decoder.DecoderConfig(action_dim=10, proprio_dim=5, horizon=4, cond_dim=32, width=32, depth=1, heads=2,
                                     global_cond=True)
  model = policies.StatePolicy(policies.PolicyConfig(enc, dec, use_text=False, privileged_dim=13), rngs=nnx.Rngs(0))
  b = 2
  batch = dict(privileged=jnp.ones((b, 13)), instruction=jnp.zeros((b, 16), jnp.uint8), embodiment_id=jnp.array([1, 2]),
               proprio=jnp.ones((b, 5)), actions=jnp.ones((b, 4, 10)), action_mask=jnp.ones((b, 4, 10), bool))
  loss, _ = nnx.jit(lambda m: m.loss(batch, jax.random.PRNGKey(1)))(model)
  assert np.isfinite(float(loss))
  graphdef, state = nnx.split(model)  # once trained a little, the privileged state changes the velocity
  moved = nnx.merge(graphdef, jax.tree.map(lambda p: p + 0.05, state))
  def run(m, priv):
    cond, mask = m.condition(dict(batch, privileged=priv))
    return m.decoder(batch["actions"], jnp.full((b,), 0.5), batch["proprio"], cond, cond_mask=mask)
  run = nnx.jit(run)
  assert float(jnp.abs(run(moved, batch["privileged"]) - run(moved, -batch["privileged"])).max()) > 1e-4
  assert nnx.jit(lambda m: m.sample(batch, jax.random.PRNGKey(2), num_steps=2))(model).shape == (b, 4, 10)
  with np.testing.assert_raises(ValueError):
    policies.StatePolicy(policies.PolicyConfig(enc, dec), rngs=nnx.Rngs(0))  # no privileged state to read


def test_decoder_stacked_memory_keys_values_match_per_block_ones():
  """ActionDecoder with stacked_memory_kv (all blocks' memory K/V in one matmul; the sampler's once-per-chunk
  cache) computes what each block's own projections compute, outputs and gradients, with a mask."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  cfg = action_decoder.DecoderConfig(action_dim=5, proprio_dim=3, horizon=4, cond_dim=16, width=16, depth=2, heads=2,
                                     time_dim=8, bilinear_rank=2, gate_init=1.0)
  r = jax.random.split(jax.random.PRNGKey(3), 3)
  x, cond = jax.random.normal(r[0], (2, 4, 5)), jax.random.normal(r[1], (2, 7, 16))
  mask = jnp.array([[True] * 7, [True] * 4 + [False] * 3])
  outs = []
  for stacked in (True, False):
    model = action_decoder.ActionDecoder(dataclasses.replace(cfg, stacked_memory_kv=stacked), rngs=nnx.Rngs(0))
    model.out.kernel[...] = jax.random.normal(r[2], model.out.kernel[...].shape)  # a non-zero output layer
    f = lambda m: m(x, jnp.array([0.3, 0.7]), jnp.ones((2, 3)), cond, cond_mask=mask)
    grads = nnx.grad(lambda m: jnp.sum(f(m) ** 2))(model)
    outs.append((f(model), jax.tree.leaves(nnx.state(grads))))
    if stacked:  # the once-per-chunk cache gives the same velocity
      np.testing.assert_allclose(f(model), model(x, jnp.array([0.3, 0.7]), jnp.ones((2, 3)), cond, cond_mask=mask,
                                                  memory_kv=model.memory_kv(cond)), rtol=1e-6, atol=1e-6)
  assert float(jnp.abs(outs[0][0]).max()) > 0.1
  np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
  for a, b in zip(outs[0][1], outs[1][1]):  # f32 sums in another order: relative to the gradient's scale
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max())))
