"""The 6-bit palette used for Core ML's palette6 mode: coremltools' own k-means palette, computed once."""

import numpy as np
import pytest

from hart.export import kmeans1d
from hart.export.coreml_compress import PaletteCache, kmeans_palette

pytest.importorskip("coremltools")


def coremltools_kmeans(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from coremltools.optimize.coreml._quantization_passes import palettize_weights
    return palettize_weights._get_lut_and_indices(weight, "KMEANS", 6, None)


def test_equals_coremltools_kmeans_palette_for_fp16_weights():
    weight = (np.random.default_rng(0).standard_normal((96, 256)) * 0.02).astype(np.float16)  # >= 10k values
    lut, indices = kmeans_palette(weight)
    want_lut, want_indices = coremltools_kmeans(weight)
    assert lut.shape == (64,) and lut.dtype == np.float16 and indices.dtype == np.uint8
    np.testing.assert_array_equal(lut[indices], want_lut[want_indices])


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_small_weights_get_an_optimal_palette(dtype):
    weight = np.random.default_rng(1).standard_normal((64, 3, 3, 3)).astype(dtype)  # under 10k values
    lut, indices = kmeans_palette(weight)
    error = np.square(lut[indices].astype(np.float64) - weight.ravel()).mean()
    want_lut, want_indices = coremltools_kmeans(weight)
    assert error <= np.square(want_lut[want_indices].astype(np.float64) - weight.ravel()).mean()


def test_few_distinct_values_are_kept_exactly():
    weight = np.array([[1.0, 2.0], [2.0, -3.0]], dtype=np.float16)
    lut, indices = kmeans_palette(weight)
    np.testing.assert_array_equal(lut[indices].reshape(weight.shape), weight)


def test_cache_computes_each_weight_once(monkeypatch):
    import hart.export.coreml_compress as coreml_compress
    calls = []
    monkeypatch.setattr(coreml_compress, "kmeans_palette", lambda w: calls.append(w.shape) or kmeans_palette(w))
    cache = PaletteCache()
    weight = np.random.default_rng(2).standard_normal((32, 32)).astype(np.float16)
    first = cache(weight)
    again = cache(weight.copy())  # same content, another array
    other = cache(weight * 2)
    assert len(calls) == 2
    assert first[0] is again[0] and first[1] is again[1]
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("shape, dtype", [((96, 256), np.float16), ((64, 3, 3, 3), np.float16),
                                          ((64, 3, 3, 3), np.float32), ((5,), np.float16)])
def test_the_numpy_fallback_gives_the_bundled_palette(monkeypatch, shape, dtype):
    weight = (np.random.default_rng(3).standard_normal(shape) * 0.02).astype(dtype)
    assert kmeans1d.bundled_kmeans1d() is not None
    lut, indices = kmeans_palette(weight)
    monkeypatch.setattr(kmeans1d, "bundled_kmeans1d", lambda: None)  # as without coremltools 9
    fallback_lut, fallback_indices = kmeans_palette(weight)
    np.testing.assert_array_equal(fallback_lut, lut)
    np.testing.assert_array_equal(fallback_indices, indices)


def test_the_private_kmeans1d_is_used_only_from_the_tested_coremltools(monkeypatch):
    import coremltools
    import coremltools._deps

    assert coremltools.__version__.startswith("9.") and kmeans1d.bundled_kmeans1d() is coremltools._deps._kmeans1d
    with monkeypatch.context() as patched:
        patched.setattr(coremltools, "__version__", "10.0")
        assert kmeans1d.bundled_kmeans1d() is None
    monkeypatch.setattr(coremltools._deps, "_kmeans1d", None)  # what coremltools leaves when it fails to load
    assert kmeans1d.bundled_kmeans1d() is None
