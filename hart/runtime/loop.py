"""The manifest-driven generation loop shared by every exported runtime (numpy, no torch).

It mirrors hart/pipeline.py step by step with the portable RNG and sampler; a backend supplies the
compute (ONNX Runtime sessions, Core ML functions, or the PyTorch export wrappers). This file is the
executable reference the web and iOS demos follow: every constant comes from manifest.json.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from hart.errors import DependencyError
from hart.portable import rng
from hart.portable.rope import image_positions, image_rope, text_rope
from hart.portable.random_text import random_text_features
from hart.portable.rng import resolve_seeds
from hart.portable.sampling import sample_categorical, sampling_settings
from hart.portable.words import WordTokenizer, check_prompts, positions_from_mask


class Backend(Protocol):
    """The graphs of an export; arrays are numpy, R = 2B guided rows ([cond; uncond])."""

    def text_encoder(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...

    def condition(self, hidden: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def begin(self, rows: int) -> None:
        """Start a generation: empty the KV cache."""

    def step(self, scale_index: int, x, cond_blocks, cond_head, cos, sin) -> tuple[np.ndarray, np.ndarray]:
        """Run one scale (extending the cache); return logits [R, L, V] and hidden [R, L, C]."""

    def update(self, scale_index: int, f_hat: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def final(self, f_hat: np.ndarray, ids: np.ndarray, residual: np.ndarray) -> np.ndarray: ...

    def residual(self, hidden: np.ndarray, ids: np.ndarray, noise: np.ndarray, guidance: np.ndarray) -> np.ndarray: ...

    def decoder(self, f_hat: np.ndarray) -> np.ndarray: ...


class NamedGraphBackend:
    """A backend whose graphs take and return named arrays (the ONNX export's names and layouts).

    Subclasses implement `run(name, **feeds) -> outputs in graph order`; the KV cache is explicit
    past/present I/O kept here between scales."""

    cache_shape: tuple[int, int, int]  # depth, heads, head size

    def run(self, name: str, **feeds: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def text_encoder(self, ids, mask):
        return self.run("text_encoder", ids=ids, mask=mask)[0]

    def qwen2(self, input_ids, attention_mask, position_ids):
        """The official text encoder's graph (optimum's export): last hidden states [B, S, D]."""
        return self.run("text_encoder", input_ids=input_ids, attention_mask=attention_mask,
                        position_ids=position_ids)[0]

    def condition(self, hidden, mask):
        return tuple(self.run("condition", hidden=hidden, mask=mask))

    def begin(self, rows: int) -> None:
        depth, heads, head_dim = self.cache_shape
        self.past_k = self.past_v = np.zeros((depth, rows, heads, 0, head_dim), dtype=np.float32)

    def step(self, scale_index, x, cond_blocks, cond_head, cos, sin):
        logits, hidden, self.past_k, self.past_v = self.run(
            "step", x=x, cond_blocks=cond_blocks, cond_head=cond_head, cos=cos, sin=sin, past_k=self.past_k,
            past_v=self.past_v)
        return logits, hidden

    def update(self, scale_index, f_hat, ids):
        return tuple(self.run(f"update_{scale_index}", f_hat=f_hat, ids=ids))

    def final(self, f_hat, ids, residual):
        return self.run("update_final", f_hat=f_hat, ids=ids, residual=residual)[0]

    def residual(self, hidden, ids, noise, guidance):
        return self.run("residual", hidden=hidden, ids=ids, noise=noise, guidance=guidance)[0]

    def decoder(self, f_hat):
        return self.run("decoder", f_hat=f_hat)[0]


@dataclass
class RuntimeResult:
    images: np.ndarray  # [B, 3, H, W] float32 in [0, 1]
    ids: list[np.ndarray]  # per scale [B, n*n] int64 (the sampled ones, also under teacher forcing)
    residual: np.ndarray | None  # [B, N*N, C_vae]
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    discrete_images: np.ndarray | None = None  # the same tokens decoded without the residual (if asked)

    def pil_images(self):
        from PIL import Image

        pixels = np.round(np.clip(self.images, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]


class Qwen2Tokens:
    """HART's Qwen2 input: prompt tokens cut to T and right-padded, after the instruction prefix."""

    def __init__(self, text: dict, folder: Path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise DependencyError("models with the Qwen2 text encoder need the tokenizers package") from None
        self.tokenizer = Tokenizer.from_file(str(folder / text["tokenizer"]))
        self.length, self.pad_id = text["max_tokens"], text["pad_id"]
        self.prefix = np.asarray(text["system_prompt_ids"], dtype=np.int64)

    def __call__(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """-> prompt ids [B, T], mask [B, T] bool and the text graph's feeds (with the prefix)."""
        rows = [self.tokenizer.encode(p).ids[: self.length] for p in prompts]
        ids = np.array([r + [self.pad_id] * (self.length - len(r)) for r in rows], dtype=np.int64)
        mask = ids != self.pad_id
        prefix = np.broadcast_to(self.prefix, (len(prompts), len(self.prefix)))
        full = np.concatenate([prefix, ids], axis=1)
        feeds = {"input_ids": full, "attention_mask": np.concatenate([np.ones_like(prefix), mask], axis=1).astype(np.int64),
                 "position_ids": np.broadcast_to(np.arange(full.shape[1], dtype=np.int64), full.shape).copy()}
        return ids, mask, feeds


class ManifestLoop:
    def __init__(self, manifest: dict, backend: Backend, folder: Path | None = None):
        self.manifest, self.backend = manifest, backend
        text = manifest["text"]
        if text["kind"] not in ("words", "random", "qwen2") or (text["kind"] == "qwen2" and "tokenizer" not in text):
            raise DependencyError(f"the {text['kind']} text encoder is not part of this export; re-export with "
                                  "--text-encoder pointing at its local folder")
        self.text = text
        self.tokenizer = WordTokenizer(tuple(text["vocab"]), text["max_tokens"]) if text["kind"] == "words" else None
        self.qwen2 = Qwen2Tokens(text, folder) if text["kind"] == "qwen2" else None
        self.patch_nums = manifest["schedule"]["patch_nums"]
        self.rope = {k: np.asarray(v, dtype=np.float32) for k, v in manifest["rope"].items() if k.endswith("inv_freq")}

    @property
    def config(self) -> dict:
        return self.manifest["model"]["config"]

    def generate(self, prompts: list[str], seed: int | Sequence[int] = 0, cfg: float | None = None,
                 top_k: int | Sequence[int] | None = None, top_p: float | None = None,
                 temperature: float | None = None, residual: bool = True, residual_guidance: float | None = None,
                 teacher_ids: list[np.ndarray] | None = None, discrete_too: bool = False) -> RuntimeResult:
        """Generate one image per prompt (the arguments are HARTPipeline.generate's).

        teacher_ids: ids per scale to continue from instead of the sampled ones (teacher forcing, for
        measuring token agreement); the result still reports the sampled ids. discrete_too: also decode
        the same tokens without the residual (HART's discrete-only image).
        """
        prompts = check_prompts(prompts)
        seeds = resolve_seeds(seed, len(prompts))
        cfg, top_ks, top_p, temperature, residual_guidance = sampling_settings(
            self.manifest["sampling"], len(self.patch_nums), cfg, top_k, top_p, temperature, residual_guidance)
        progress, backend, batch, timings = self.manifest["schedule"]["progress"], self.backend, len(prompts), {}
        last, size = len(self.patch_nums) - 1, self.patch_nums[-1]
        latent = self.config["tokenizer"]["latent_channels"]

        started = time.perf_counter()
        if self.tokenizer is not None:
            ids, mask = self.tokenizer(prompts)
            hidden = backend.text_encoder(ids, mask)
        elif self.qwen2 is not None:
            ids, mask, feeds = self.qwen2(prompts)
            hidden = backend.qwen2(**feeds)[:, -ids.shape[1]:].astype(np.float32)
        else:  # random-weight timing runs: the same seeded features PyTorch's stand-in encoder gives
            hidden, mask = random_text_features(prompts, self.text["max_tokens"], self.text["dim"])
        null_mask = np.zeros_like(mask)
        null_mask[:, 0] = True  # the unconditional rows: zero features, first token marked real
        both_mask = np.concatenate([mask, null_mask])
        positions = np.concatenate([positions_from_mask(mask), np.zeros_like(mask, dtype=np.int64)])
        x, cond_blocks, cond_head = backend.condition(np.concatenate([hidden, np.zeros_like(hidden)]), both_mask)
        timings["text"] = time.perf_counter() - started

        backend.begin(2 * batch)
        f_hat = np.zeros((batch, latent, size, size), dtype=np.float32)
        sampled = []
        for si, pn in enumerate(self.patch_nums):
            started = time.perf_counter()
            if si == 0:
                cos, sin = text_rope(positions, self.rope["text_inv_freq"])
            else:
                cos, sin = image_rope(image_positions(pn, size, positions[:, -1]), self.rope["image_inv_freq"])
            logits, hidden = backend.step(si, x, cond_blocks, cond_head, cos, sin)
            if si == 0:
                logits = logits[:, -1:]  # the first token comes from the last text position
            guidance = cfg * progress[si]
            guided = (1 + guidance) * logits[:batch] - guidance * logits[batch:]
            uniforms = rng.token_uniforms(seeds, si, pn * pn).reshape(-1)
            scale_ids = sample_categorical(guided.reshape(batch * pn * pn, -1), uniforms, top_ks[si], top_p,
                                           temperature).reshape(batch, pn * pn)
            sampled.append(scale_ids)
            if teacher_ids is not None:
                scale_ids = np.asarray(teacher_ids[si], dtype=np.int64)
            if si < last:
                f_hat, x = backend.update(si, f_hat, scale_ids)
            timings[f"scale_{si}"] = time.perf_counter() - started

        started = time.perf_counter()
        zeros = np.zeros((batch, size * size, latent), dtype=np.float32)
        residual_tokens = None
        if residual:
            noise = rng.residual_noise(seeds, self.manifest["residual"]["steps"], size * size, latent)
            residual_tokens = backend.residual(hidden, scale_ids, noise,
                                               np.array(cfg * progress[last] * residual_guidance, dtype=np.float32))
        f_final = backend.final(f_hat, scale_ids, residual_tokens if residual else zeros)
        timings["residual" if residual else "codes"] = time.perf_counter() - started
        started = time.perf_counter()
        images = backend.decoder(f_final)
        timings["decode"] = time.perf_counter() - started
        result = RuntimeResult(images, sampled, residual_tokens, seeds, timings)
        if discrete_too:
            result.discrete_images = backend.decoder(backend.final(f_hat, scale_ids, zeros))
        return result
