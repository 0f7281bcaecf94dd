import jax
import jax.numpy as jnp
import numpy as np
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
  c = run(model, cond.at[:, :2].set(99.0))
  assert float(jnp.abs(a - c).max()) > 1e-4


def test_image_baseline_loss_and_sample():
  from vam.models import encoders, policies
  enc = encoders.EncoderConfig(width=32, depth=1, heads=2, patch=16, image_size=32, frames=2, text_len=16)
  dec = action_decoder.DecoderConfig(action_dim=10, proprio_dim=5, horizon=4, cond_dim=32, width=32, depth=1, heads=2)
  model = policies.ImageBaseline(policies.BaselineConfig(enc, dec), rngs=nnx.Rngs(0))
  b = 2
  batch = dict(images=jnp.zeros((b, 2, 32, 32, 3), jnp.uint8), instruction=jnp.zeros((b, 16), jnp.uint8).at[:, :3].set(65),
               embodiment_id=jnp.array([0, 2]), proprio=jnp.ones((b, 5)), actions=jnp.ones((b, 4, 10)),
               action_mask=jnp.ones((b, 4, 10), bool).at[:, :, 7:].set(False))
  (loss, metrics), grads = nnx.jit(nnx.value_and_grad(lambda m: m.loss(batch, jax.random.PRNGKey(1)), has_aux=True))(model)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  out = nnx.jit(lambda m: m.sample(batch, jax.random.PRNGKey(2), num_steps=3))(model)
  assert out.shape == (b, 4, 10)
