"""The backend of exported graphs for the one loop (hart/loop.py): numpy arrays, no torch.

Subclasses say how to run a graph by name (`run(name, **feeds) -> outputs in graph order`: ONNX
Runtime sessions, the PyTorch export wrappers); Core ML overrides the calls whose names differ.
Everything else a graph runtime must do between the graphs lives here once: the prompt's text input
as the manifest describes it (words, Qwen2 token ids, or seeded random features), the RoPE tables
from the manifest's inverse frequencies, and the KV cache as explicit past/present arrays.
"""

from pathlib import Path

import numpy as np

from hart.config import HARTConfig
from hart.errors import ConfigError, DependencyError
from hart.backend import SoftCodes
from hart.portable.random_text import random_text_features
from hart.portable.rope import image_positions, image_rope, text_rope
from hart.portable.spec import NumpyOps
from hart.portable.words import WordTokenizer, check_prompts
from hart.runtime.manifest import RopeSection, TextSection


class Qwen2Tokens:
    """HART's Qwen2 input: prompt tokens cut to T and right-padded, after the instruction prefix."""

    def __init__(self, text: TextSection, folder: Path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise DependencyError("models with the Qwen2 text encoder need the tokenizers package") from None
        self.words = Tokenizer.from_file(str(folder / text.tokenizer_json))
        self.length, self.pad_id = text.max_tokens, text.pad_id
        self.prefix = np.asarray(text.system_prompt_ids, dtype=np.int64)

    def __call__(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """-> prompt ids [B, T], mask [B, T] bool and the text graph's feeds (with the prefix)."""
        rows = [self.words.encode(p).ids[: self.length] for p in prompts]
        ids = np.array([r + [self.pad_id] * (self.length - len(r)) for r in rows], dtype=np.int64)
        mask = ids != self.pad_id
        prefix = np.broadcast_to(self.prefix, (len(prompts), len(self.prefix)))
        full = np.concatenate([prefix, ids], axis=1)
        attention = np.concatenate([np.ones_like(prefix), mask], axis=1).astype(np.int64)
        positions = np.broadcast_to(np.arange(full.shape[1], dtype=np.int64), full.shape).copy()
        return ids, mask, {"input_ids": full, "attention_mask": attention, "position_ids": positions}


class GraphBackend:
    """Exported graphs as the loop's backend. R = 2B rows; the KV cache is past/present I/O."""

    ops = NumpyOps()
    soft_codes = False
    max_batch: int | None = None
    shares_prefix = True  # graphs with free row counts (Core ML's fixed shapes turn it off)

    def __init__(self, config: HARTConfig, text: TextSection, rope: RopeSection, folder: Path | None = None):
        if text.kind not in ("words", "random", "qwen2") or (text.kind == "qwen2" and not text.tokenizer_json):
            raise DependencyError(f"the {text.kind} text encoder is not part of this export; re-export with "
                                  "--text-encoder pointing at its local folder")
        self.config, self.text = config, text
        self.words = WordTokenizer(tuple(text.vocab), text.max_tokens) if text.kind == "words" else None
        self.qwen2 = Qwen2Tokens(text, folder) if text.kind == "qwen2" else None
        self.text_inv_freq = np.asarray(rope.text_inv_freq, dtype=np.float32)
        self.image_inv_freq = np.asarray(rope.image_inv_freq, dtype=np.float32)
        t = config.transformer
        self.cache_shape = (t.depth, t.heads, t.head_dim)

    def run(self, name: str, **feeds: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------- the loop's calls
    def encode_text(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.words is not None:
            ids, mask = self.words(prompts)
            return self.run("text_encoder", ids=ids, mask=mask)[0], mask
        if self.qwen2 is not None:
            ids, mask, feeds = self.qwen2(check_prompts(prompts))
            hidden = self.run("text_encoder", **feeds)[0]
            return hidden[:, -ids.shape[1]:].astype(np.float32), mask
        # random-weight timing runs: the same seeded features PyTorch's stand-in encoder gives
        return random_text_features(prompts, self.text.max_tokens, self.text.dim)

    def condition(self, features: np.ndarray, mask: np.ndarray):
        tokens, cond_blocks, cond_head = self.run("condition", hidden=features, mask=mask)
        return tokens, (cond_blocks, cond_head)

    def begin(self, batch: int) -> np.ndarray:
        self.past_k = self.past_v = self._empty_cache(2 * batch)
        size = self.config.latent_size
        return np.zeros((batch, self.config.tokenizer.latent_channels, size, size), dtype=np.float32)

    def rope(self, scale_index: int, positions: np.ndarray):
        if scale_index == 0:
            return text_rope(positions, self.text_inv_freq)
        grid = image_positions(self.config.patch_nums[scale_index], self.config.latent_size, positions)
        return image_rope(grid, self.image_inv_freq)

    def step(self, scale_index: int, x: np.ndarray, condition, rope):
        (cond_blocks, cond_head), (cos, sin) = condition, rope
        logits, hidden, self.past_k, self.past_v = self.run(
            "step", x=x, cond_blocks=cond_blocks, cond_head=cond_head, cos=cos, sin=sin, past_k=self.past_k,
            past_v=self.past_v)
        return logits, hidden

    @staticmethod
    def take_condition(condition, index: np.ndarray):
        return tuple(np.take(part, index, axis=0) for part in condition)

    def _empty_cache(self, rows: int) -> np.ndarray:
        depth, heads, head_dim = self.cache_shape
        return np.zeros((depth, rows, heads, 0, head_dim), dtype=np.float32)

    def text_step(self, x: np.ndarray, condition, rope, plan, kept):
        """The step graph on x's k rows with their rows' condition, then the cache and the logits expanded
        to the R rows (the graph's row-wise arithmetic does not depend on how many rows it runs)."""
        (cond_blocks, cond_head), (cos, sin) = condition, rope
        empty = self._empty_cache(len(plan.rows))
        logits, _, keys, values = self.run("step", x=x, cond_blocks=cond_blocks[plan.rows],
                                           cond_head=cond_head[plan.rows], cos=cos, sin=sin, past_k=empty,
                                           past_v=empty)
        state = (keys, values, logits[:, -1:])
        new = (keys[:, plan.keep], values[:, plan.keep], state[2][plan.keep]) if len(plan.keep) else None
        if kept is not None:
            state = (np.concatenate([keys, kept[0]], axis=1), np.concatenate([values, kept[1]], axis=1),
                     np.concatenate([state[2], kept[2]]))
        self.past_k, self.past_v = state[0][:, plan.index], state[1][:, plan.index]
        return state[2][plan.index], new

    def candidates(self, guided: np.ndarray, top_k: int) -> tuple[np.ndarray, None]:
        return guided.reshape(-1, guided.shape[-1]), None

    def update(self, scale_index: int, f_hat: np.ndarray, ids: np.ndarray, soft: SoftCodes | None):
        f_hat, next_x = self.run(f"update_{scale_index}", f_hat=f_hat, ids=ids)
        return f_hat, next_x

    def sample_residual(self, hidden: np.ndarray, ids: np.ndarray, noise: np.ndarray, guidance: float) -> np.ndarray:
        if hidden.ndim == 3 and len(hidden) == len(ids):  # B rows only (hart.approximations): both halves, guidance 0
            hidden, guidance = np.concatenate([hidden, hidden]), 0.0
        return self.run("residual", hidden=hidden, ids=ids, noise=noise, guidance=np.array(guidance, dtype=np.float32))[0]

    def check_approximations(self, approximate) -> None:
        steps = self.config.residual_head.sampling_steps
        if approximate.residual_steps not in (None, steps):
            raise ConfigError(f"this export's residual graph unrolls {steps} DDPM steps; other residual step "
                              "counts need the PyTorch backend")
        if approximate.pruned_scales:
            raise ConfigError("this export's step graphs take every token of a scale; token pruning needs the "
                              "PyTorch backend")

    def keep_conditional(self, condition, batch: int):
        self.past_k, self.past_v = self.past_k[:, :batch], self.past_v[:, :batch]
        return self.take_condition(condition, np.arange(batch))

    def final(self, f_hat: np.ndarray, ids: np.ndarray, soft: SoftCodes | None, residual: np.ndarray | None):
        if residual is None:  # discrete-only: the same graph with a zero residual
            residual = np.zeros((ids.shape[0], ids.shape[1], self.config.tokenizer.latent_channels), dtype=np.float32)
        return self.run("update_final", f_hat=f_hat, ids=ids, residual=residual)[0]

    def decode(self, f_hat: np.ndarray) -> np.ndarray:
        return self.run("decoder", f_hat=f_hat)[0]

    def can_run(self, name: str) -> bool:
        """Whether this export holds graph `name` (older exports have no encoder)."""
        return False

    def encode_image(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        if not self.can_run("encoder"):
            raise DependencyError("this export has no encoder graph, which editing needs; re-export it with this "
                                  "version of hart (hart export onnx)")
        ids, residual = self.run("encoder", image=np.ascontiguousarray(images, dtype=np.float32))
        return self.split_ids(ids), residual

    def quantize(self, latents: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        if not self.can_run("quantize"):
            raise DependencyError("this export has no quantize graph, which canvases larger than the trained size "
                                  "need; re-export it with this version of hart (hart export onnx)")
        ids, residual = self.run("quantize", f_hat=np.ascontiguousarray(latents, dtype=np.float32))
        return self.split_ids(ids), residual

    def split_ids(self, ids: np.ndarray) -> list[np.ndarray]:
        """[B, sum(n*n)] ids of every scale, concatenated in patch_nums order -> per scale [B, n*n] int64."""
        ends = np.cumsum([n * n for n in self.config.patch_nums])
        return np.split(np.asarray(ids).astype(np.int64), ends[:-1], axis=1)

    @staticmethod
    def latents(f_hat: np.ndarray) -> np.ndarray:
        return np.asarray(f_hat, dtype=np.float32)

    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        return self.decode(np.ascontiguousarray(latents, dtype=np.float32))

    @staticmethod
    def host(array: np.ndarray) -> np.ndarray:
        return array

    @staticmethod
    def host_ids(ids: np.ndarray) -> np.ndarray:
        return ids

    def synchronize(self) -> None:
        """Graph runtimes return when their outputs are ready."""
