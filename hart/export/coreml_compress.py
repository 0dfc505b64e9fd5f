"""Weight compression of converted packages (coremltools.optimize.coreml), one of COMPRESSIONS per export.

palette6 uses its own k-means palette (`kmeans_palette`): the same LUT as coremltools' "kmeans" mode,
computed once per distinct weight instead of once per weight per function.
"""

import hashlib

import numpy as np

from hart.export.kmeans1d import weighted_kmeans1d

COMPRESSIONS = ("none", "int8", "palette6", "int4-block")
COMPRESSED_PACKAGES = ("text_encoder", "condition", "step", "residual", "decoder")  # update stays fp16
PALETTE_BITS = 6


def kmeans_palette(weight: np.ndarray, nbits: int = PALETTE_BITS) -> tuple[np.ndarray, np.ndarray]:
    """The palette coremltools' "kmeans" mode computes for an fp16 weight, in linear time.

    Both run optimal 1-D k-means (coremltools' bundled kmeans1d, or its numpy equal: hart.export.kmeans1d)
    over the distinct values weighted by their counts. coremltools finds the distinct values by sorting
    each weight, and does so again for every function of a multifunction package: 2.5 min per 0.7B step
    function, 25 min for its ten.
    fp16 has at most 65,536 distinct bit patterns, so counting them (bincount) finds the same values:
    for fp16 weights of 10,000+ values the palette is coremltools' own. For smaller ones coremltools
    switches to scikit-learn's KMeans; the optimal 1-D clustering here has the lower error.

    Returns the LUT [2**nbits] (the weight's dtype, unused entries zero) and uint8 indices [numel].
    """
    flat = weight.reshape(-1)
    if flat.dtype != np.float16:  # rare here (fp16 compute): sorting is fine
        values, position, counts = np.unique(flat, return_inverse=True, return_counts=True)
        lut, cluster_of_value = _cluster(values, counts, nbits, weight.dtype)
        return lut, cluster_of_value[position]
    bits = flat.view(np.uint16)
    counts = np.bincount(bits, minlength=1 << 16)
    present = np.flatnonzero(counts).astype(np.uint16)  # distinct bit patterns
    present = present[np.argsort(present.view(np.float16), kind="stable")]  # in value order
    lut, cluster_of_value = _cluster(present.view(np.float16), counts[present], nbits, weight.dtype)
    cluster_of_bits = np.zeros(1 << 16, dtype=np.uint8)
    cluster_of_bits[present] = cluster_of_value
    return lut, cluster_of_bits[bits]


def _cluster(values: np.ndarray, counts: np.ndarray, nbits: int,
             dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Weighted optimal 1-D k-means of sorted distinct values: LUT [2**nbits] and each value's entry."""
    centroids, clusters = weighted_kmeans1d(values, counts, min(len(values), 1 << nbits))
    lut = np.zeros(1 << nbits, dtype=dtype)
    lut[:len(centroids)] = centroids
    return lut, clusters.astype(np.uint8)


class PaletteCache:
    """`kmeans_palette` remembered by weight content: the step's per-scale functions are converted one by
    one and each holds the same transformer weights, which need their palette computed once."""

    def __init__(self):
        self._palettes: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = (weight.dtype.str, weight.shape, hashlib.blake2b(np.ascontiguousarray(weight).data, digest_size=16).digest())
        if key not in self._palettes:
            self._palettes[key] = kmeans_palette(weight)
        return self._palettes[key]


def compress(cto, model, compression: str, palette: PaletteCache):
    """`model` (an MLModel) with its weights compressed by mode `compression`; `cto` is coremltools.optimize."""
    if compression == "none":
        return model
    coreml = cto.coreml
    if compression == "int8":
        op = coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return coreml.linear_quantize_weights(model, coreml.OptimizationConfig(global_config=op))
    if compression == "palette6":
        op = coreml.OpPalettizerConfig(mode="custom", lut_function=palette, granularity="per_tensor")
        return coreml.palettize_weights(model, coreml.OptimizationConfig(global_config=op))
    op = coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32)
    return coreml.linear_quantize_weights(model, coreml.OptimizationConfig(global_config=op))
