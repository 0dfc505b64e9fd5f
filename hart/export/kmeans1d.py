"""Optimal weighted 1-D k-means, for the 6-bit palettes of Core ML's palette6 mode.

coremltools bundles a fast exact implementation (Daniel Steinberg's kmeans1d, O(k n)) but only as
the private `coremltools._deps._kmeans1d`: it is used when the installed coremltools is the tested
major version (pyproject pins 9.0) and the module loads; otherwise `optimal_kmeans1d` gives the same
answer in numpy. Both are exact (dynamic programming over the sorted values, no initialisation), so
they pick the same clusters unless two clusterings cost the same to the last bits of a float64, and
both take the centroids as running weighted means, so the palettes are the same bit for bit.
"""

import numpy as np

TESTED_COREMLTOOLS_MAJOR = "9"


def bundled_kmeans1d():
    """coremltools' private kmeans1d module, or None when coremltools is missing, untested or lacks it."""
    try:
        import coremltools
        from coremltools._deps import _kmeans1d
    except ImportError:
        return None
    if coremltools.__version__.split(".")[0] != TESTED_COREMLTOOLS_MAJOR:
        return None
    return _kmeans1d  # None when coremltools could not load its compiled part


def weighted_kmeans1d(values: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct `values` [n] with `weights` [n] -> centroids [min(k, n)] (float64) and each value's cluster."""
    bundled = bundled_kmeans1d()
    if bundled is None:
        return optimal_kmeans1d(values, weights, k)
    clustered = bundled.cluster(np.asarray(values, dtype=np.float64), k, weights=weights)
    return np.asarray(clustered.centroids, dtype=np.float64), np.asarray(clustered.clusters, dtype=np.int64)


def optimal_kmeans1d(values: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact weighted k-means of sorted `values` by dynamic programming, in O(k n log n).

    Layer m holds, for every j, the least cost of the first j values in m + 1 clusters and where its last
    cluster starts. That start never moves left as j grows (the cost obeys the quadrangle inequality),
    so each layer is solved by divide and conquer over j, all branches of one recursion depth at once.
    Ties go to the earliest start.
    """
    x = np.asarray(values, dtype=np.float64)
    n, k = len(x), min(k, len(x))
    w = np.asarray(weights, dtype=np.float64)
    total_w, total_wx, total_wxx = (np.concatenate(([0.0], np.cumsum(a))) for a in (w, w * x, w * x * x))

    def cost(start: np.ndarray, end: np.ndarray) -> np.ndarray:  # of values [start, end), start < end
        wx = total_wx[end] - total_wx[start]
        return total_wxx[end] - total_wxx[start] - wx * wx / (total_w[end] - total_w[start])

    best = np.full(n + 1, np.inf)
    best[1:] = cost(np.zeros(n, dtype=np.int64), np.arange(1, n + 1))
    starts = np.zeros((k, n + 1), dtype=np.int64)  # starts[m][j]: where the last of m + 1 clusters begins
    for m in range(1, k):
        previous, best = best, np.full(n + 1, np.inf)
        # pending branches: ends j in [j_lo, j_hi] whose last cluster starts within [s_lo, s_hi]
        j_lo, j_hi, s_lo, s_hi = (np.array([v]) for v in (m + 1, n, m, n - 1))
        while len(j_lo):
            j = (j_lo + j_hi) // 2
            first, last = s_lo, np.minimum(s_hi, j - 1)
            counts = last - first + 1
            offsets = np.cumsum(counts) - counts  # of each branch's candidates in the flat arrays below
            branch = np.repeat(np.arange(len(j)), counts)
            start = first[branch] + np.arange(counts.sum()) - offsets[branch]
            candidate = previous[start] + cost(start, j[branch])
            lowest = np.minimum.reduceat(candidate, offsets)
            hits = np.flatnonzero(candidate == lowest[branch])
            chosen = hits[np.unique(branch[hits], return_index=True)[1]]  # the first lowest of each branch
            best[j], starts[m, j] = candidate[chosen], start[chosen]
            left, right = j_lo <= j - 1, j + 1 <= j_hi
            j_lo, j_hi, s_lo, s_hi = (np.concatenate((a[left], b[right])) for a, b in (
                (j_lo, j + 1), (j - 1, j_hi), (s_lo, start[chosen]), (start[chosen], s_hi)))

    clusters = np.zeros(n, dtype=np.int64)
    end = n
    for m in range(k - 1, 0, -1):
        start = starts[m, end]
        clusters[start:end] = m
        end = start
    centroids, seen = [0.0] * k, [0.0] * k  # running weighted means, as the bundled kmeans1d computes them
    for value, weight, m in zip(x.tolist(), w.tolist(), clusters.tolist()):
        seen[m] += weight
        centroids[m] += (value - centroids[m]) * weight / seen[m]
    return np.array(centroids), clusters
