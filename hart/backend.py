"""The contract between the one loop (hart/loop.py) and a backend: the methods a backend supplies and the
data that crosses between them (forced tokens, Gumbel soft codes). Numpy only; it imports no torch."""

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hart.approximations import Approximations
from hart.portable.spec import ArrayOps


@dataclass
class ForcedTokens:
    """Tokens the loop takes instead of sampling them: every token (teacher forcing, for parity checks) or
    those `keep` marks (editing keeps the encoder's tokens outside the region to edit, hart.portable.edit).

    The loop still samples every token with the same random numbers, so where nothing is kept the result
    is plain generation, bit for bit."""

    ids: list[np.ndarray]  # per scale [B, n*n] int64
    keep: list[np.ndarray] | None = None  # per scale [B, n*n] bool, True = take ids[si]; None: every token
    residual: Any | None = None  # [B, N*N, C_vae] (backend array) for the kept last-scale tokens; None: the head's

    def take(self, index: np.ndarray) -> "ForcedTokens":
        """The same forcing for images `index` [k] of the batch."""
        return ForcedTokens([np.asarray(f)[index] for f in self.ids],
                            None if self.keep is None else [np.asarray(k)[index] for k in self.keep],
                            None if self.residual is None else self.residual[index])

    def rows(self, start: int, stop: int) -> "ForcedTokens":
        """The same forcing for images start..stop-1 of the batch."""
        return self.take(np.arange(start, min(stop, len(self.ids[0]))))


@dataclass
class SoftCodes:
    """HART's optional Gumbel-softmax smoothing: codes = sum_k weights[k] * codebook[candidates[k]]."""

    weights: np.ndarray  # [B, n, K] float32
    candidates: np.ndarray  # [B, n, K] int64 vocabulary ids


class Backend(Protocol):
    """The compute of one model; arrays are the backend's own (R = 2B guided rows, [cond; uncond]).

    Ids, noise and positions arrive as numpy; logits leave through `candidates` as numpy."""

    ops: ArrayOps
    soft_codes: bool  # whether `update` and `final` accept Gumbel soft codes
    max_batch: int | None  # prompts per run (None: any); the loop splits larger batches

    def encode_text(self, prompts: list[str]) -> tuple[Any, np.ndarray]:
        """-> conditional features [B, T, D] and mask [B, T] bool (numpy)."""

    def condition(self, features: Any, mask: np.ndarray) -> tuple[Any, Any]:
        """Rows' features [R, T, D] and mask -> prefix tokens [R, T, C] and the pooled condition."""

    def begin(self, batch: int) -> Any:
        """Start a generation of `batch` prompts: empty the KV cache; return f_hat = zeros [B, C_vae, N, N]."""

    def rope(self, scale_index: int, positions: np.ndarray) -> Any:
        """RoPE tables of one step: text positions [R, T] at scale 0, else the scale's image grid."""

    def step(self, scale_index: int, x: Any, condition: Any, rope: Any) -> tuple[Any, Any]:
        """One scale through every block (extending the cache) -> logits [R, L, V], hidden [R, L, C]."""

    def pruned_step(self, scale_index: int, x: Any, condition: Any, rope: Any, previous: Any,
                    ratio: float) -> tuple[Any, Any]:
        """step() with `ratio` of the tokens pruned, restored from `previous` (the last scale's hidden states,
        all its rows: after keep_conditional x holds only the first, conditional ones):
        hart.approximations.pruned_scales. Only backends whose check_approximations admits pruning have it."""

    def candidates(self, guided: Any, top_k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Guided logits [B, L, V] -> numpy rows [B*L, K] and their vocabulary ids (None: all V columns)."""

    def update(self, scale_index: int, f_hat: Any, ids: np.ndarray, soft: SoftCodes | None) -> tuple[Any, Any]:
        """Add scale si's codes to f_hat; -> f_hat and the next scale's input rows [R, n'^2, C]."""

    def sample_residual(self, hidden: Any, ids: np.ndarray, noise: np.ndarray, guidance: float) -> Any:
        """The residual head's sampling loop -> residual [B, N*N, C_vae]."""

    def final(self, f_hat: Any, ids: np.ndarray, soft: SoftCodes | None, residual: Any | None) -> Any:
        """The last scale's codes (plus the residual, when given) added without Φ -> f_hat."""

    def decode(self, f_hat: Any) -> Any:
        """-> images [B, 3, H, W] float32 in [0, 1], on the host."""

    def encode_image(self, images: np.ndarray) -> tuple[list[np.ndarray], Any]:
        """images [B, 3, H, W] float32 in [0, 1] -> the tokenizer's ids per scale [B, n*n] (numpy) and its
        continuous residual [B, N*N, C_vae] (backend array): what editing keeps outside the mask."""

    def quantize(self, latents: np.ndarray) -> tuple[list[np.ndarray], Any]:
        """latents [B, C_vae, N, N] float32 (numpy) -> the quantizer's ids per scale [B, n*n] (numpy) and its
        residual [B, N*N, C_vae] (backend array): a canvas window keeps what is already drawn, re-quantized."""

    def latents(self, f_hat: Any) -> np.ndarray:
        """A final f_hat [B, C_vae, N, N] as float32 numpy (a canvas stitches windows' latents)."""

    def decode_latents(self, latents: np.ndarray) -> Any:
        """decode() of latents [B, C_vae, N, N] given as float32 numpy."""

    def host(self, array: Any) -> Any:
        """A result array moved to the host (numpy stays numpy; torch tensors go to the CPU)."""

    def host_ids(self, ids: np.ndarray) -> Any:
        """Sampled ids [B, n*n] int64 as the backend reports them (numpy, or a CPU tensor)."""

    def synchronize(self) -> None:
        """Wait for queued device work, so stage timings are true."""

    def check_approximations(self, approximate: Approximations) -> None:
        """Refuse, in one sentence and before any work, approximations this backend cannot run."""

    def keep_conditional(self, condition: Any, batch: int) -> Any:
        """Drop the unconditional rows from the KV cache (later steps run the B conditional rows alone,
        hart.approximations) -> the condition of those rows."""

    # with shares_prefix = True (optional; False where graphs have fixed rows, e.g. Core ML):
    def take_condition(self, condition: Any, index: np.ndarray) -> Any:
        """The pooled condition of rows `index` (ops.take does the same for arrays)."""

    def text_step(self, x: Any, condition: Any, rope: Any, plan: Any, kept: Any | None) -> tuple[Any, Any]:
        """The text prefix for the k rows x holds (rope: theirs; condition: all R rows; plan.rows: which) ->
        logits [R, 1, V] of the batch's rows (plan.index into the computed rows, then kept's) and the
        state of rows plan.keep for later calls (kept: such a state, or None). Afterwards the KV cache
        holds the R rows; anything that mixes rows runs on all R, so the result equals step()'s."""
