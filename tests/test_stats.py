"""Streaming normalisation statistics (vam/data/stats.py): exact on small data, bounded memory and a measured
quantile error on large data, deterministic, clear errors."""

import numpy as np
import pytest

from vam.data import stats


def _exact(x):
  return dict(mean=x.mean(0), std=x.std(0), min=x.min(0), max=x.max(0), q01=np.quantile(x, 0.01, axis=0),
              q99=np.quantile(x, 0.99, axis=0))


def test_streaming_summary_is_exact_while_the_rows_fit_the_reservoir():
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 2.0, (5000, 7)) * rng.uniform(0.1, 10, 7)
  running = stats.Running(capacity=5000)
  for chunk in np.array_split(x, [1, 17, 900, 901, 3000]):  # uneven batches, one of a single row
    running.update(chunk)
  got, want = running.result(), _exact(x)
  for k in ("min", "max", "q01", "q99"):
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  for k in ("mean", "std"):
    np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)
  assert stats.summarize(x) == stats.Running().update(x).result()


def test_streaming_quantiles_past_the_reservoir_keep_memory_bounded_and_rank_error_small():
  rng = np.random.default_rng(1)
  capacity, n = 2000, 200_000
  x = np.concatenate([rng.standard_exponential((n // 2, 3)), rng.normal(0, 1, (n // 2, 3))])  # skewed, ordered
  running = stats.Running(capacity=capacity, seed=3)
  for chunk in np.array_split(x, 100):
    running.update(chunk)
  got = running.result()
  assert running._sample.shape == (capacity, 3)  # pylint: disable=protected-access
  np.testing.assert_allclose(got["mean"], x.mean(0), rtol=1e-10)
  np.testing.assert_allclose(got["std"], x.std(0), rtol=1e-10)
  np.testing.assert_array_equal(got["min"], x.min(0))
  np.testing.assert_array_equal(got["max"], x.max(0))
  # The estimate's rank in the full data: within 4 standard errors of a uniform sample's.
  for q, key in ((0.01, "q01"), (0.99, "q99")):
    rank = (x <= np.asarray(got[key])).mean(0)
    tol = 4 * np.sqrt(q * (1 - q) / capacity)
    assert np.all(np.abs(rank - q) < tol), (key, rank, tol)
  # Not the first rows only: the sample holds both halves of the stream in about equal parts.
  from_second_half = np.isin(running._sample[:, 0], x[n // 2:, 0]).mean()  # pylint: disable=protected-access
  assert 0.4 < from_second_half < 0.6


def test_streaming_summary_is_deterministic_and_by_step_matches_numpy():
  rng = np.random.default_rng(2)
  chunks = rng.normal(size=(300, 4, 5))
  a = stats.RunningByStep(4, capacity=100, seed=7)
  b = stats.RunningByStep(4, capacity=100, seed=7)
  for part in np.array_split(chunks, 9):
    a.update(part)
    b.update(part)
  assert a.result() == b.result()
  exact_all, exact_steps = stats.RunningByStep(4, capacity=10_000).update(chunks).result()
  np.testing.assert_allclose(exact_all["q99"], np.quantile(chunks.reshape(-1, 5), 0.99, axis=0))
  np.testing.assert_allclose(exact_steps["mean"], chunks.mean(0), rtol=1e-12)
  assert len(exact_steps["q01"]) == 4 and len(exact_steps["q01"][0]) == 5


def test_streaming_summary_errors_name_the_problem():
  running = stats.Running().update(np.zeros((3, 4)))
  with pytest.raises(ValueError, match="width 5 after rows of width 4"):
    running.update(np.zeros((2, 5)))
  with pytest.raises(ValueError, match="no rows"):
    stats.Running().result()
  with pytest.raises(ValueError, match="capacity"):
    stats.Running(capacity=0)
  with pytest.raises(ValueError, match=r"expected \(n, 4, D\)"):
    stats.RunningByStep(4).update(np.zeros((2, 3, 1)))
