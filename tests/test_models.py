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
  out = model(x, tau, proprio, cond)
  assert out.shape == (b, cfg.horizon, cfg.action_dim)
  np.testing.assert_allclose(out, 0.0)  # zero-initialised output layer

  def loss(m):
    return jnp.mean((m(x, tau, proprio, cond, tau_v=tau, proprio_dropped=jnp.array([True, False, True])) - 1) ** 2)
  grads = nnx.grad(loss)(model)
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
  a = model(x, tau, proprio, cond, cond_mask=mask)
  b = model(x, tau, proprio, cond.at[:, 2:].set(99.0), cond_mask=mask)
  np.testing.assert_allclose(a, b, atol=1e-5)
  c = model(x, tau, proprio, cond.at[:, :2].set(99.0), cond_mask=mask)
  assert float(jnp.abs(a - c).max()) > 1e-4
