"""tfprune.oneshot's pure math (selection, magnitude, Wanda, SparseGPT) against numpy references."""

import numpy as np
import pytest

from tfprune.oneshot import magnitude, selection, sparsegpt, wanda


def correlated_inputs(samples=512, inputs=32, seed=0):
    """Rows with strongly correlated features and uneven scales, as a layer's inputs are."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(inputs // 4, inputs))
    x = rng.normal(size=(samples, inputs // 4)) @ mixing + 0.1 * rng.normal(size=(samples, inputs))
    return x * rng.uniform(0.2, 3.0, size=inputs)


def zeros_in_every_group(w, m, n):
    """Independent loop check: every output has at least m zeros in each n consecutive inputs."""
    for out in range(w.shape[1]):
        for start in range(0, w.shape[0], n):
            if sum(1 for v in w[start:start + n, out] if v == 0) < m:
                return False
    return True


def reference_sparsegpt(w, h, sparsity=None, m_by_n=None, dampening=0.01, block_size=128):
    """Dense OBS reference: column by column, the inverse Hessian of the remaining columns is recomputed."""
    h = np.array(h, np.float64)
    diag = np.diag(h).copy()
    diag[diag == 0] = 1
    h[np.diag_indices_from(h)] = diag + dampening * diag.mean()
    w = np.array(w, np.float64).T  # (outputs, inputs)
    outputs, inputs = w.shape
    prune = np.zeros(w.shape, bool)

    def inverse_diagonal(j):
        return np.linalg.inv(h[j:, j:])[0, 0]

    for i in range(inputs):
        if m_by_n is None and i % block_size == 0:
            end = min(i + block_size, inputs)
            count = int(np.floor(end * sparsity + 0.5)) - int(np.floor(i * sparsity + 0.5))
            scores = np.stack([w[:, j] ** 2 / inverse_diagonal(j) for j in range(i, end)], axis=1)
            for row in range(outputs):
                prune[row, i + np.argsort(scores[row], kind="stable")[:count]] = True
        if m_by_n is not None and i % m_by_n[1] == 0:
            m, n = m_by_n
            scores = np.stack([w[:, j] ** 2 / inverse_diagonal(j) for j in range(i, i + n)], axis=1)
            for row in range(outputs):
                prune[row, i + np.argsort(scores[row], kind="stable")[:m]] = True
        rest_inverse = np.linalg.inv(h[i:, i:])
        for row in np.nonzero(prune[:, i])[0]:
            w[row, i:] -= w[row, i] / rest_inverse[0, 0] * rest_inverse[0]
            w[row, i] = 0.0
    return w.T


def layer_error(x, w, pruned):
    return float(np.sum((x @ w - x @ pruned) ** 2))


def test_selection_prunes_exact_counts_per_output_and_ties_by_index():
    scores = np.array([[1.0, 5.0], [1.0, 4.0], [0.0, 3.0], [2.0, 3.0]])
    mask = selection.prune_lowest_per_output(scores, 2)
    assert mask.sum(axis=0).tolist() == [2, 2]
    assert mask[:, 0].tolist() == [True, False, True, False]  # equal scores: the lower index goes first
    assert mask[:, 1].tolist() == [False, False, True, True]
    assert selection.zeros_per_output(10, 0.25) == 3 and selection.zeros_per_output(7, 0.5) == 4
    grouped = selection.prune_lowest_m_of_n(np.arange(16.0)[::-1].reshape(8, 2), 3, 4)
    assert grouped.sum() == 2 * 2 * 3 and grouped[[1, 2, 3, 5, 6, 7]].all()
    with pytest.raises(ValueError, match="multiple of N"):
        selection.prune_lowest_m_of_n(np.ones((6, 2)), 2, 4)


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.5", True, float("nan")])
def test_sparsity_outside_the_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        selection.check_sparsity(bad)


@pytest.mark.parametrize("bad", [(4, 4), (0, 4), (2,), (2.0, 4), "2:4"])
def test_m_by_n_pattern_must_be_two_integers(bad):
    with pytest.raises(ValueError, match="0 < M < N"):
        selection.check_m_by_n(bad)


def test_magnitude_keeps_the_largest_weights_of_every_output():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(12, 5))
    pruned = magnitude.magnitude_prune(w, sparsity=0.6)
    for out in range(5):
        kept = sorted(range(12), key=lambda i: abs(w[i, out]))[7:]  # 12 * 0.6 = 7.2 -> 7 zeros
        assert set(np.nonzero(pruned[:, out])[0]) == set(kept)
    assert zeros_in_every_group(magnitude.magnitude_prune(w, m_by_n=(2, 4)), 2, 4)


def test_wanda_scores_match_a_numpy_reference_over_streamed_batches():
    x = correlated_inputs(samples=96, inputs=16)
    w = np.random.default_rng(2).normal(size=(16, 6))
    accumulator = wanda.InputNormAccumulator(16)
    for start in range(0, 96, 40):  # uneven batches
        accumulator.update(x[start:start + 40])
    scores = wanda.wanda_scores(w, accumulator.norms())
    reference = np.array([[abs(w[i, j]) * np.sqrt(sum(x[s, i] ** 2 for s in range(96))) for j in range(6)]
                          for i in range(16)])
    np.testing.assert_allclose(scores, reference, rtol=1e-12)
    pruned = wanda.wanda_prune(w, accumulator.norms(), sparsity=0.5)
    for out in range(6):
        lowest = sorted(range(16), key=lambda i: reference[i, out])[:8]
        assert set(np.nonzero(pruned[:, out] == 0)[0]) == set(lowest)
        np.testing.assert_array_equal(pruned[pruned[:, out] != 0, out], w[pruned[:, out] != 0, out])
    assert zeros_in_every_group(wanda.wanda_prune(w, accumulator.norms(), m_by_n=(2, 4)), 2, 4)


@pytest.mark.parametrize("options", [
    {"sparsity": 0.5, "block_size": 32}, {"sparsity": 0.6, "block_size": 8}, {"sparsity": 0.3, "block_size": 5},
    {"m_by_n": (2, 4), "block_size": 8}, {"m_by_n": (1, 4), "block_size": 32},
])
def test_sparsegpt_matches_the_dense_numpy_reference(options):
    x = correlated_inputs()
    w = np.random.default_rng(3).normal(size=(32, 10))
    acc = sparsegpt.HessianAccumulator(32)
    for start in range(0, len(x), 100):
        acc.update(x[start:start + 100])
    np.testing.assert_allclose(acc.hessian(), x.T @ x / len(x), rtol=1e-10)
    pruned = sparsegpt.sparsegpt_prune(w, acc.hessian(), dtype="float64", **options)
    reference = reference_sparsegpt(w, acc.hessian(), **options)
    np.testing.assert_array_equal(pruned == 0, reference == 0)
    np.testing.assert_allclose(pruned, reference, rtol=1e-7, atol=1e-9)
    if "m_by_n" in options:
        assert zeros_in_every_group(pruned, *options["m_by_n"])
    else:
        expected = selection.zeros_per_output(32, options["sparsity"])
        assert (pruned == 0).sum(axis=0).tolist() == [expected] * 10
    single = sparsegpt.sparsegpt_prune(w.astype(np.float32), acc.hessian(), dtype="float32", **options)
    assert single.dtype == np.float32
    assert abs(layer_error(x, w, single) - layer_error(x, w, pruned)) <= 1e-3 * layer_error(x, w, pruned)


@pytest.mark.parametrize("options", [{"sparsity": 0.5}, {"sparsity": 0.6}, {"m_by_n": (2, 4)}])
def test_sparsegpt_reconstructs_correlated_inputs_better_than_wanda_and_magnitude(options):
    x = correlated_inputs(samples=1024, inputs=64, seed=4)
    w = np.random.default_rng(5).normal(size=(64, 24))
    acc_h, acc_n = sparsegpt.HessianAccumulator(64), wanda.InputNormAccumulator(64)
    acc_h.update(x)
    acc_n.update(x)
    errors = {
        "magnitude": layer_error(x, w, magnitude.magnitude_prune(w, **options)),
        "wanda": layer_error(x, w, wanda.wanda_prune(w, acc_n.norms(), **options)),
        "sparsegpt": layer_error(x, w, sparsegpt.sparsegpt_prune(w, acc_h.hessian(), block_size=16, **options)),
    }
    assert errors["sparsegpt"] < 0.5 * min(errors["wanda"], errors["magnitude"]), errors
    relative = sparsegpt.reconstruction_error(acc_h.hessian(), w, sparsegpt.sparsegpt_prune(w, acc_h.hessian(), **options))
    assert np.isclose(relative * float(np.sum((x @ w) ** 2)), layer_error(
        x, w, sparsegpt.sparsegpt_prune(w, acc_h.hessian(), **options)), rtol=1e-6)


def test_sparsegpt_handles_inputs_never_seen_and_rejects_bad_options():
    x = correlated_inputs(samples=64, inputs=16)
    x[:, 3] = 0.0  # a dead input: zero Hessian row and column
    h = x.T @ x
    pruned = sparsegpt.sparsegpt_prune(np.ones((16, 4)), h, sparsity=0.5)
    assert np.isfinite(pruned).all() and (pruned == 0).sum(axis=0).tolist() == [8] * 4
    assert (pruned[3] == 0).all()  # pruning a weight whose input is always zero costs nothing
    with pytest.raises(ValueError, match="dampening"):
        sparsegpt.sparsegpt_prune(np.ones((16, 4)), h, sparsity=0.5, dampening=-1)
    with pytest.raises(ValueError, match="block_size"):
        sparsegpt.sparsegpt_prune(np.ones((16, 4)), h, sparsity=0.5, block_size=0)
    with pytest.raises(ValueError, match="float32"):
        sparsegpt.sparsegpt_prune(np.ones((16, 4)), h, sparsity=0.5, dtype="float16")
    with pytest.raises(ValueError, match="multiples of N"):
        sparsegpt.sparsegpt_prune(np.ones((16, 4)), h, m_by_n=(2, 4), block_size=6)
    with pytest.raises(ValueError, match="shape"):
        sparsegpt.sparsegpt_prune(np.ones((16, 4)), h[:8, :8], sparsity=0.5)
