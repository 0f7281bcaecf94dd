import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vam import flow


def test_interpolation_endpoints_and_velocity():
  x0 = jnp.arange(6.0).reshape(2, 3)
  eps = -jnp.ones((2, 3))
  np.testing.assert_allclose(flow.interpolate(x0, eps, jnp.zeros(2)), x0)
  np.testing.assert_allclose(flow.interpolate(x0, eps, jnp.ones(2)), eps)
  # d x_tau / d tau is exactly the target velocity.
  d = jax.jacfwd(lambda t: flow.interpolate(x0, eps, t * jnp.ones(2)))(0.3)
  np.testing.assert_allclose(d, flow.target_velocity(x0, eps), atol=1e-6)


def test_masked_loss_ignores_invalid_entries():
  x0, eps = jnp.zeros((2, 4)), jnp.ones((2, 4))
  v = jnp.ones((2, 4)).at[:, 2:].set(100.0)  # wrong only where masked out
  mask = jnp.array([1, 1, 0, 0.0])
  assert float(flow.loss(v, x0, eps, mask)) == 0.0
  assert float(flow.loss(v, x0, eps)) > 0.0


@pytest.mark.parametrize("kind", flow.SAMPLERS)
def test_time_samplers_in_range(kind):
  t = flow.sample_time(jax.random.PRNGKey(0), (20000,), kind)
  assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_sqrt_sampler_density():
  t = np.asarray(flow.sample_time(jax.random.PRNGKey(1), (200000,), "sqrt"))
  assert t.min() >= flow.SQRT_SHIFT
  # P(tau < 0.5) = ((0.5 - s) / (1 - s))^1.5
  expected = ((0.5 - flow.SQRT_SHIFT) / (1 - flow.SQRT_SHIFT)) ** 1.5
  assert abs((t < 0.5).mean() - expected) < 0.01


def test_unknown_sampler():
  with pytest.raises(ValueError, match="logit_normal"):
    flow.sample_time(jax.random.PRNGKey(0), (2,), "beta")


@pytest.mark.parametrize("integrator", [flow.euler, flow.heun])
def test_integrators_follow_the_exact_flow(integrator):
  # For a point mass at x0 the optimal velocity is (x - x0) / tau; integrating it from noise lands on x0.
  x0 = jnp.array([[0.5, -2.0]])
  velocity = lambda x, tau: (x - x0) / tau[:, None]
  out = integrator(velocity, jnp.array([[3.0, 1.0]]), num_steps=10, tau_end=0.0)
  np.testing.assert_allclose(out, x0, atol=1e-5)
