"""Flow matching: the one convention used everywhere in vam (METHOD.md).

    tau = 0 is clean data, tau = 1 is pure noise:  x_tau = (1 - tau) * x0 + tau * eps
    target velocity u = eps - x0;  loss = masked mean of || v_theta(x_tau, tau, cond) - u ||^2
    sampling integrates dx/dtau = v from tau = 1 down to tau = 0 (Euler or Heun).

Time samplers: `logit_normal` (video), `sqrt` (actions: density proportional to sqrt(tau - 0.001) on
[0.001, 1], pi0's Beta(1.5, 1) schedule in this convention), `uniform`, and `one` (tau = 1 always: with
x0 prediction the loss is plain L2 regression of the clean chunk -- a diagnostic, not a generative model).

Prediction targets: a network may output the velocity itself (`velocity`) or the clean data (`x0`), turned
into a velocity by `velocity_from_x0` so that the loss, the samplers and every caller see one quantity.
"""

from typing import Callable

import jax
import jax.numpy as jnp

SQRT_SHIFT = 0.001
SAMPLERS = ("logit_normal", "sqrt", "uniform", "one")
PREDICTIONS = ("velocity", "x0")
X0_MIN_TAU = 0.05  # velocity_from_x0 divides by max(tau, this): bounds the loss weight on x0 errors at 400


def sample_time(rng, shape, kind: str = "uniform", *, mean: float = 0.0, std: float = 1.0) -> jax.Array:
  """Draws flow times tau in [0, 1] (shape `shape`)."""
  if kind == "logit_normal":
    return jax.nn.sigmoid(mean + std * jax.random.normal(rng, shape))
  if kind == "sqrt":
    # CDF ((tau - s) / (1 - s))^(3/2) on [s, 1]  =>  tau = s + (1 - s) u^(2/3).
    u = jax.random.uniform(rng, shape)
    return SQRT_SHIFT + (1.0 - SQRT_SHIFT) * u ** (2.0 / 3.0)
  if kind == "uniform":
    return jax.random.uniform(rng, shape)
  if kind == "one":
    return jnp.ones(shape)
  raise ValueError(f"unknown flow time sampler {kind!r}; valid: {list(SAMPLERS)}")


def _expand(tau, x):
  return jnp.reshape(tau, tau.shape + (1,) * (x.ndim - tau.ndim))


def interpolate(x0, eps, tau):
  """x_tau = (1 - tau) x0 + tau eps, with tau (B,) broadcast over x's trailing axes."""
  t = _expand(tau, x0)
  return (1.0 - t) * x0 + t * eps


def target_velocity(x0, eps):
  return eps - x0


def velocity_from_x0(x_tau, x0_pred, tau):
  """The velocity (x_tau - x0) / tau implied by a clean-data prediction (x0_pred, x_tau (B, ...), tau (B,)).

  With this parameterisation the velocity loss weighs x0 errors by 1 / tau^2 (capped by X0_MIN_TAU): at
  tau = 1 it is plain regression of the clean data, and a zero-initialised output starts at the data's mean
  (0 for standardised data) instead of at zero velocity."""
  return (x_tau - x0_pred) / jnp.maximum(_expand(tau, x_tau), X0_MIN_TAU)


LOSS_SPACES = ("velocity", "x0")


def sample_weight(tau, space: str = "velocity"):
  """Per-sample loss weight (B,) that puts the velocity loss in `space`: 1 (velocity), or max(tau,
  X0_MIN_TAU)^2, which turns the velocity error of an x0-predicting network back into its x0 error (the same
  optimum, the emphasis moved to high noise, where a chunk's mean is decided)."""
  if space == "velocity":
    return jnp.ones_like(tau)
  if space == "x0":
    return jnp.square(jnp.maximum(tau, X0_MIN_TAU))
  raise ValueError(f"unknown flow loss space {space!r} (config.model.action_loss); valid: {list(LOSS_SPACES)}")


def sampling_steps(sampler: str, num_steps: int) -> int:
  """Euler steps for a model trained with time sampler `sampler`: one trained at tau = 1 only (`one`, a
  regressor) knows no other time, so it takes a single step whatever `num_steps` asks."""
  return 1 if sampler == "one" else num_steps


def loss(v_pred, x0, eps, mask=None, weight=None):
  """Masked mean squared error against u = eps - x0. `mask` broadcasts to x0 (1 = valid); `weight` (B,) scales
  each sample's error (`sample_weight`)."""
  err = jnp.square(v_pred - target_velocity(x0, eps))
  if weight is not None:
    err = err * _expand(weight, err)
  if mask is None:
    return jnp.mean(err)
  mask = jnp.broadcast_to(mask, err.shape).astype(err.dtype)
  return jnp.sum(err * mask) / jnp.maximum(jnp.sum(mask), 1.0)


VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_tau (B, ...), tau (B,)) -> v (B, ...)


def initial_noise(rng, shape, scale: float = 1.0) -> jax.Array:
  """The sampler's starting point x(tau = 1): eps ~ N(0, scale^2). `scale` < 1 is a sampling temperature
  (inference only; training always uses unit noise): it pulls samples towards the high-density middle of the
  learned distribution, trading diversity for precision -- at 0 the ODE runs deterministically from the origin.
  """
  if isinstance(scale, (int, float)) and scale < 0:  # a config value (a traced scale is the caller's business)
    raise ValueError(f"noise scale must be >= 0 (config.eval.noise_scale), got {scale}")
  return scale * jax.random.normal(rng, shape)


def _taus(num_steps, tau_start, tau_end):
  return jnp.linspace(tau_start, tau_end, num_steps + 1)


def euler(velocity: VelocityFn, noise, num_steps: int = 10, tau_start: float = 1.0, tau_end: float = 0.0):
  """Integrates from x(tau_start) = noise down to tau_end with `num_steps` Euler steps."""
  taus = _taus(num_steps, tau_start, tau_end)
  batch = noise.shape[:1]

  def step(x, i):
    t, t_next = taus[i], taus[i + 1]
    return x + (t_next - t) * velocity(x, jnp.full(batch, t)), None

  x, _ = jax.lax.scan(step, noise, jnp.arange(num_steps))
  return x


def heun(velocity: VelocityFn, noise, num_steps: int = 10, tau_start: float = 1.0, tau_end: float = 0.0):
  """Second-order Heun integration (two velocity evaluations per step; Euler on the last step to 0)."""
  taus = _taus(num_steps, tau_start, tau_end)
  batch = noise.shape[:1]

  def step(x, i):
    t, t_next = taus[i], taus[i + 1]
    v0 = velocity(x, jnp.full(batch, t))
    x_pred = x + (t_next - t) * v0
    # The step that lands on tau = 0 is plain Euler (the velocity field is singular there).
    v1 = jnp.where(t_next > 0, velocity(x_pred, jnp.full(batch, jnp.maximum(t_next, 1e-6))), v0)
    return x + (t_next - t) * 0.5 * (v0 + v1), None

  x, _ = jax.lax.scan(step, noise, jnp.arange(num_steps))
  return x


def gaussian_velocity_skip(tau):
  """The velocity E[eps - x0 | x_tau] = c(tau) x_tau of unit-variance Gaussian data, as a coefficient c(tau).

  A network that outputs `c(tau) * x_tau + F` starts (F = 0) as the best context-free predictor for
  standardised data -- the identity at tau = 1, zero at 1/2, minus the identity at 0 -- and only has to learn
  the conditional correction (the EDM-style skip connection, in this convention)."""
  return (2.0 * tau - 1.0) / (jnp.square(1.0 - tau) + jnp.square(tau))
