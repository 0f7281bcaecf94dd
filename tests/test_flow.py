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


@pytest.mark.parametrize("prediction", flow.PREDICTIONS)
def test_flow_matching_learns_two_modes_where_regression_averages(prediction):
  """1-D actions at -1 or +1 (50/50, same condition): flow samples land in both modes, whether the decoder
  predicts the velocity (velocity loss) or the clean action (x0 loss); trained at tau = 1 only (the `one`
  sampler) an x0-predicting decoder is an L2 regressor and predicts the modes' mean, which is neither."""
  import dataclasses
  import optax
  from flax import nnx
  from vam.models import action_decoder

  cfg = action_decoder.DecoderConfig(action_dim=1, proprio_dim=1, horizon=1, cond_dim=8, width=32, depth=1, heads=2,
                                     time_dim=32, bilinear_rank=4, prediction=prediction)
  b = 256
  cond, proprio = jnp.zeros((b, 1, 8)), jnp.zeros((b, 1))

  def data(rng):
    k1, k2 = jax.random.split(rng)
    return jnp.where(jax.random.bernoulli(k1, 0.5, (b, 1, 1)), 1.0, -1.0) + 0.05 * jax.random.normal(k2, (b, 1, 1))

  def fit(loss_fn, steps=400, cfg=cfg):
    model = action_decoder.ActionDecoder(cfg, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, rng):
      loss, grads = nnx.value_and_grad(loss_fn)(model, rng)
      opt.update(model, grads)
      return loss

    for i in range(steps):
      step(model, opt, jax.random.PRNGKey(i))
    return model

  def flow_loss(model, rng, sampler="uniform"):
    k0, k1, k2 = jax.random.split(rng, 3)
    x0, eps, tau = data(k0), jax.random.normal(k1, (b, 1, 1)), flow.sample_time(k2, (b,), sampler)
    space = "x0" if prediction == "x0" else "velocity"  # the pairs the configs use
    return flow.loss(model(flow.interpolate(x0, eps, tau), tau, proprio, cond), x0, eps,
                     weight=flow.sample_weight(tau, space))

  flow_model = fit(flow_loss)
  samples = nnx.jit(lambda m: flow.euler(lambda x, t: m(x, t, proprio, cond), jax.random.normal(
      jax.random.PRNGKey(99), (b, 1, 1)), 20))(flow_model).ravel()
  near_pos, near_neg = np.mean(np.abs(samples - 1) < 0.3), np.mean(np.abs(samples + 1) < 0.3)
  assert near_pos > 0.3 and near_neg > 0.3, (near_pos, near_neg)
  assert np.mean(np.abs(samples) < 0.5) < 0.1  # little mass between the modes

  if prediction == "x0":
    reg = fit(lambda m, rng: flow_loss(m, rng, "one"), cfg=dataclasses.replace(cfg, prediction="x0"))
    # One Euler step from tau = 1 and zero noise returns the predicted clean action.
    pred = np.asarray(flow.euler(lambda x, t: reg(x, t, proprio, cond), jnp.zeros((b, 1, 1)), 1)).ravel()
    assert np.all(np.abs(pred) < 0.3)  # the mean of the modes: neither -1 nor +1


def test_velocity_from_x0_is_the_point_mass_velocity():
  x0, x = jnp.array([[0.5, -2.0]]), jnp.array([[3.0, 1.0]])
  np.testing.assert_allclose(flow.velocity_from_x0(x, x0, jnp.array([0.5])), (x - x0) / 0.5, rtol=1e-6)
  # Near tau = 0 the division is capped, so a loss on it stays bounded.
  np.testing.assert_allclose(flow.velocity_from_x0(x, x0, jnp.array([0.0])), (x - x0) / flow.X0_MIN_TAU, rtol=1e-6)
  out = flow.euler(lambda x, tau: flow.velocity_from_x0(x, x0, tau), x, num_steps=10)
  np.testing.assert_allclose(out, x0, atol=1e-5)


def test_unknown_prediction_is_refused():
  from vam.models import action_decoder
  with pytest.raises(ValueError, match="decoder.prediction"):
    action_decoder.DecoderConfig(action_dim=1, proprio_dim=1, horizon=1, cond_dim=8, prediction="eps")


def test_gaussian_velocity_skip_is_the_optimal_linear_velocity():
  """For x0, eps ~ N(0, 1): the least-squares coefficient of (eps - x0) on x_tau is the skip coefficient."""
  k0, k1 = jax.random.split(jax.random.PRNGKey(0))
  x0, eps = jax.random.normal(k0, (200_000,)), jax.random.normal(k1, (200_000,))
  for tau in (0.1, 0.3, 0.5, 0.8, 1.0):
    x = flow.interpolate(x0, eps, jnp.float32(tau))
    coef = jnp.sum(x * (eps - x0)) / jnp.sum(x * x)
    assert abs(float(coef) - float(flow.gaussian_velocity_skip(jnp.float32(tau)))) < 0.02, tau


def test_initial_noise_scale():
  rng = jax.random.PRNGKey(0)
  np.testing.assert_allclose(flow.initial_noise(rng, (4, 3), 0.5), 0.5 * jax.random.normal(rng, (4, 3)), rtol=1e-6)
  assert not np.asarray(flow.initial_noise(rng, (4, 3), 0.0)).any()
  with pytest.raises(ValueError, match="noise_scale"):
    flow.initial_noise(rng, (4, 3), -1.0)


def test_x0_loss_space_measures_the_clean_chunk_error():
  k0, k1, k2 = jax.random.split(jax.random.PRNGKey(3), 3)
  x0, eps, x0_pred = (jax.random.normal(k, (5, 4, 3)) for k in (k0, k1, k2))
  tau = jnp.array([0.1, 0.3, 0.5, 0.9, 1.0])
  v = flow.velocity_from_x0(flow.interpolate(x0, eps, tau), x0_pred, tau)
  np.testing.assert_allclose(flow.loss(v, x0, eps, weight=flow.sample_weight(tau, "x0")),
                             jnp.mean(jnp.square(x0_pred - x0)), rtol=1e-5)
  np.testing.assert_allclose(flow.sample_weight(tau, "velocity"), 1.0)
  with pytest.raises(ValueError, match="action_loss"):
    flow.sample_weight(tau, "eps")


def test_a_regressor_samples_in_one_step():
  assert flow.sampling_steps("one", 10) == 1 and flow.sampling_steps("sqrt", 10) == 10
  assert float(flow.sample_time(jax.random.PRNGKey(0), (3,), "one").min()) == 1.0
