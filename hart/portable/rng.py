"""The one portable random-number generator: counter-based SplitMix64 (spec version 1).

Every random draw of inference (token sampling, Gumbel noise, diffusion noise) comes from here, so
that one seed gives the same image from PyTorch, the ONNX runtime, the web page and the iOS sample.
It is specified so that it can be re-implemented bit for bit in any language with 64-bit unsigned
integers (BigInt in JavaScript, UInt64 in Swift):

    All integer arithmetic is on unsigned 64-bit integers, modulo 2**64; ">>" is a logical shift.

    mix(z):   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
              z = (z ^ (z >> 27)) * 0x94D049BB133111EB
              return z ^ (z >> 31)                          (the SplitMix64 finaliser)

    key(seed, stream) = mix(mix(seed) ^ (stream * 0xD1B54A32D192ED03))
    bits(seed, stream, i) = mix(key(seed, stream) + (i + 1) * 0x9E3779B97F4A7C15),  i = 0, 1, 2, ...

    uniform(i)      = (bits(i) >> 40) * 2**-24             float32 in [0, 1)
    uniform_open(i) = ((bits(i) >> 40) + 0.5) * 2**-24     float32 in (0, 1)
    normal(2k), normal(2k+1): Box-Muller on the pair of draws 2k, 2k+1, in float64:
        u1 = ((bits(2k) >> 40) + 1) * 2**-24   (in (0, 1]),   u2 = (bits(2k+1) >> 40) * 2**-24
        r = sqrt(-2 ln u1);  normal(2k) = r cos(2 pi u2);  normal(2k+1) = r sin(2 pi u2)
        each then rounded to float32. An odd count draws the pair and drops the last value.

Streams keep the uses independent, so changing one stage never shifts another's draws, and each
image of a batch has its own seed, so a batch equals the images generated one by one:

    token_stream(si)      = si           one uniform per token of scale si, row-major
    gumbel_stream(si)     = 1024 + si    one open uniform per (token, vocabulary entry), row-major
    residual_stream(k)    = 2048 + k     k = 0: the starting noise x_T; k = 1..S-1: the noise added
                                          after denoising step k; normals in (token, channel) order

A two-object prompt that names no positions is drawn at a pair of them (hart.portable.compose):
    placement_stream      = 3072         pair number (bits(0) >> 40) * P >> 24 of the P far-apart pairs

A canvas larger than the trained size draws window (row, col) with its own seed (hart.portable.canvas):
    window_seed(seed, 0, 0)   = seed     (the first window is the image of the seed itself)
    window_seed(seed, r, c)   = key(seed, 2**32 + r * 2**16 + c)   otherwise (r, c < 2**16)

This module imports numpy only (no torch): the torch-free runtime uses it as is.
"""

import numpy as np

SPEC_NAME = "hart-splitmix64-v1"
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
STREAM_MULTIPLIER = 0xD1B54A32D192ED03
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB

TOKEN_STREAM_BASE = 0
GUMBEL_STREAM_BASE = 1024
RESIDUAL_STREAM_BASE = 2048
PLACEMENT_STREAM = 3072
WINDOW_STREAM_BASE = 1 << 32
MAX_WINDOWS_PER_SIDE = 1 << 16


def token_stream(scale_index: int) -> int:
    return TOKEN_STREAM_BASE + scale_index


def gumbel_stream(scale_index: int) -> int:
    return GUMBEL_STREAM_BASE + scale_index


def residual_stream(block: int) -> int:
    return RESIDUAL_STREAM_BASE + block


def choice(seed: int, stream: int, count: int) -> int:
    """An integer in [0, count) from draw 0 of a stream, in integers: (bits >> 40) * count >> 24."""
    return int(bits(seed, stream, 1)[0] >> np.uint64(40)) * count >> 24


def window_seed(seed: int, row: int, col: int) -> int:
    """The seed of window (row, col) of a canvas; (0, 0) keeps `seed`."""
    if not (0 <= row < MAX_WINDOWS_PER_SIDE and 0 <= col < MAX_WINDOWS_PER_SIDE):
        raise ValueError(f"window ({row}, {col}) is outside the {MAX_WINDOWS_PER_SIDE} windows a side the RNG numbers")
    if row == col == 0:
        return check_seed(seed)
    return stream_key(seed, WINDOW_STREAM_BASE + row * MAX_WINDOWS_PER_SIDE + col)


def _mix_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def _mix_array(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


def resolve_seeds(seed, count: int) -> list[int]:
    """An int gives image i the seed `seed + i`; a sequence gives one seed per prompt."""
    from hart.errors import ConfigError

    seeds = [seed + i for i in range(count)] if isinstance(seed, (int, np.integer)) else list(seed)
    if len(seeds) != count:
        raise ConfigError(f"got {len(seeds)} seeds for {count} prompts; pass one seed or one per prompt")
    try:
        return [check_seed(s) for s in seeds]
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MASK64:
        raise ValueError(f"seed must be an integer in [0, 2**64) (got {seed!r})")
    return int(seed)


def stream_key(seed: int, stream: int) -> int:
    return _mix_int(_mix_int(check_seed(seed)) ^ ((stream * STREAM_MULTIPLIER) & MASK64))


def bits_at(seed: int, stream: int, indices: np.ndarray) -> np.ndarray:
    """Draws number `indices` (any shape, non-negative integers) of a stream, as uint64.

    Random access is what makes the generator counter-based: a runtime that only needs the Gumbel
    noise of the top-k candidates draws exactly those entries.
    """
    counters = np.asarray(indices, dtype=np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        return _mix_array(np.uint64(stream_key(seed, stream)) + counters * np.uint64(GOLDEN))


def bits(seed: int, stream: int, count: int, offset: int = 0) -> np.ndarray:
    """Draws offset .. offset+count-1 of a stream as uint64."""
    return bits_at(seed, stream, np.arange(offset, offset + count, dtype=np.uint64))


def _top24(draws: np.ndarray) -> np.ndarray:
    return (draws >> np.uint64(40)).astype(np.float64)


def uniform(seed: int, stream: int, count: int, offset: int = 0) -> np.ndarray:
    """float32 in [0, 1); exact, since 24-bit integers times 2**-24 are representable."""
    return (_top24(bits(seed, stream, count, offset)) * 2.0**-24).astype(np.float32)


def uniform_open_at(seed: int, stream: int, indices: np.ndarray) -> np.ndarray:
    """float32 in (0, 1) at the given draw numbers, for logarithms (Gumbel noise)."""
    return ((_top24(bits_at(seed, stream, indices)) + 0.5) * 2.0**-24).astype(np.float32)


def normal(seed: int, stream: int, count: int) -> np.ndarray:
    """count standard normals (float32) by Box-Muller on consecutive pairs of draws."""
    pairs = (count + 1) // 2
    top = _top24(bits(seed, stream, 2 * pairs)).reshape(pairs, 2)
    u1 = (top[:, 0] + 1.0) * 2.0**-24
    u2 = top[:, 1] * 2.0**-24
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    out = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).reshape(-1)
    return out[:count].astype(np.float32)


def spec() -> dict:
    """The RNG description written into export manifests."""
    return {
        "name": SPEC_NAME,
        "mix": ["z ^= z >> 30", f"z *= {MIX1:#x}", "z ^= z >> 27", f"z *= {MIX2:#x}", "z ^= z >> 31"],
        "key": f"mix(mix(seed) ^ (stream * {STREAM_MULTIPLIER:#x}))",
        "bits": f"mix(key + (i + 1) * {GOLDEN:#x})",
        "uniform": "(bits >> 40) * 2^-24",
        "uniform_open": "((bits >> 40) + 0.5) * 2^-24",
        "normal": "Box-Muller on draws (2k, 2k+1): u1 = ((bits>>40)+1)*2^-24, u2 = (bits>>40)*2^-24, "
                  "r = sqrt(-2 ln u1), n(2k) = r cos(2 pi u2), n(2k+1) = r sin(2 pi u2), in float64 then float32",
        "streams": {
            "token": f"{TOKEN_STREAM_BASE} + scale_index",
            "gumbel": f"{GUMBEL_STREAM_BASE} + scale_index",
            "residual": f"{RESIDUAL_STREAM_BASE} + k (k=0: x_T, k>=1: noise after step k)",
            "placement": f"{PLACEMENT_STREAM}: an unplaced pair's positions, choice = (bits(0) >> 40) * count >> 24",
        },
        "window_seed": f"canvas window (r, c): seed itself for (0, 0), else key(seed, {WINDOW_STREAM_BASE} + r * "
                       f"{MAX_WINDOWS_PER_SIDE} + c) used as that window's seed",
        "per_image_seed": "image i of a batch uses seed + i unless seeds are given per image",
    }


# ------------------------------------------------------------------------------ stream layouts
def token_uniforms(seeds: list[int], scale_index: int, tokens: int) -> np.ndarray:
    """[B, tokens] uniforms for sampling scale si, one row per image seed."""
    return np.stack([uniform(seed, token_stream(scale_index), tokens) for seed in seeds])


def gumbel_uniforms(seeds: list[int], scale_index: int, vocab_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Open uniforms [B, tokens, K] at the (token, vocabulary id) draws of `vocab_ids` [B, tokens, K]."""
    token = np.arange(vocab_ids.shape[1], dtype=np.int64)[:, None]
    return np.stack([uniform_open_at(seed, gumbel_stream(scale_index), token * vocab_size + ids)
                     for seed, ids in zip(seeds, vocab_ids)])


def residual_noise(seeds: list[int], steps: int, tokens: int, channels: int) -> np.ndarray:
    """[steps, B * tokens, channels] normals: block 0 is x_T, block k the noise after step k."""
    blocks = [np.concatenate([normal(seed, residual_stream(k), tokens * channels) for seed in seeds])
              for k in range(steps)]
    return np.stack(blocks).reshape(steps, len(seeds) * tokens, channels)
