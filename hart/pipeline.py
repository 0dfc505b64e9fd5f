"""HARTPipeline: the one generation loop (hart/loop.py) over the PyTorch backend.

The backend keeps every tensor on the model's device between stages (CPU, CUDA or MPS, any dtype);
only the guided logits' top-k candidates leave it, for the portable sampler, and ids come back. The
KV cache is a preallocated StaticKVCache written by position.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from hart.components import HARTModel
from hart.device import resolve_device, resolve_dtype, synchronize
from hart.loop import Generation, GenerationLoop, SoftCodes, StageEvent  # noqa: F401 (re-exported)
from hart.models.kv_cache import StaticKVCache
from hart.models.pruning import pivotal_tokens, restore, take_tokens
from hart.portable.scales import ScaleSchedule
from hart.sampling import ResidualSampler
from hart.tokenizer.quantizer import tokens_to_grid


class TorchOps:
    @staticmethod
    def concat(arrays, axis: int = 0) -> torch.Tensor:
        return torch.cat(list(arrays), dim=axis)

    @staticmethod
    def zeros_like(array: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(array)

    @staticmethod
    def where(mask: np.ndarray, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.from_numpy(mask).to(b.device), a.to(b), b)

    @staticmethod
    def take(array: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        return array[torch.from_numpy(np.asarray(index, dtype=np.int64)).to(array.device)]


class TorchBackend:
    """HARTModel's networks as the loop's backend; models stay pure functions of tensors."""

    ops = TorchOps()
    soft_codes = True
    max_batch = None
    shares_prefix = True

    def __init__(self, model: HARTModel, device: torch.device, dtype: torch.dtype):
        self.model, self.device, self.dtype = model, device, dtype
        self.transformer, self.quantizer = model.transformer, model.tokenizer.quantizer
        config = model.config
        self.schedule = ScaleSchedule(config.patch_nums, config.text.max_tokens)
        self.residual_sampler = ResidualSampler(config.residual_head)

    def _ids(self, ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self.device)

    def _codes(self, ids: np.ndarray, soft: SoftCodes | None) -> torch.Tensor:
        """[B, n, C_vae] float32: codebook rows, or the Gumbel weights' mix of the candidates' rows."""
        if soft is None:
            return self.quantizer.codebook(self._ids(ids))
        weights = torch.from_numpy(soft.weights).to(self.device)
        return torch.einsum("bnk,bnkc->bnc", weights, self.quantizer.codebook(self._ids(soft.candidates)))

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, np.ndarray]:
        context = self.model.text_encoder.encode(prompts)
        return context.hidden.to(self.device), context.mask.cpu().numpy()

    def condition(self, features: torch.Tensor, mask: np.ndarray):
        return self.transformer.embed_context(features.to(self.dtype), torch.from_numpy(mask).to(self.device))

    def _cache(self, rows: int, length: int | None = None) -> StaticKVCache:
        t = self.model.config.transformer
        return StaticKVCache(t.depth, rows, t.heads, length or self.schedule.sequence_length, t.head_dim, self.dtype,
                             self.device)

    def begin(self, batch: int) -> torch.Tensor:
        config = self.model.config
        self.cache = self._cache(2 * batch)
        self.pruned = 0  # cache positions left free by pruned tokens: later scales write that much earlier
        size = config.latent_size
        return torch.zeros(batch, config.tokenizer.latent_channels, size, size, device=self.device)

    def take_condition(self, condition, index: np.ndarray):
        return type(condition)(*(TorchOps.take(part, index) for part in (condition.blocks, condition.head)))

    def text_step(self, x: torch.Tensor, condition, rope, plan, kept):
        """The blocks on x's k rows (their modulation taken from all R rows' condition), then the cache and
        the last text position's hidden state expanded to the R rows and the logits head run on all R:
        every matmul whose rows are batch rows (not tokens) sees the R rows step() would."""
        take = TorchOps.take
        # the conditional rows apart from a new unconditional one: CPU kernels' last bits depend on a matmul's
        # row count, so a prompt's rows must see the same count whether or not the unconditional row is kept
        conditional = np.arange(len(plan.rows) - len(plan.keep))  # plan.keep: the last computed row, if any
        parts = [self._text_rows(take(x, group), condition, tuple(take(t, group) for t in rope), plan.rows[group])
                 for group in (conditional, plan.keep) if len(group)]
        last = torch.cat([part[0] for part in parts])  # [k, 1, C]
        keys = [torch.cat(layer) for layer in zip(*(part[1] for part in parts))]  # per layer [k, H, T, D]
        values = [torch.cat(layer) for layer in zip(*(part[2] for part in parts))]
        new = None
        if len(plan.keep):
            new = ([take(k, plan.keep) for k in keys], [take(v, plan.keep) for v in values], take(last, plan.keep))
        if kept is not None:
            keys = [torch.cat([k, old]) for k, old in zip(keys, kept[0])]
            values = [torch.cat([v, old]) for v, old in zip(values, kept[1])]
            last = torch.cat([last, kept[2]])
        for layer, (k, v) in enumerate(zip(keys, values)):  # into begin()'s cache of the R rows
            self.cache.write(layer, 0, take(k, plan.index), take(v, plan.index))
        return self.transformer.logits(take(last, plan.index), condition), new

    def _text_rows(self, x: torch.Tensor, condition, rope, rows: np.ndarray):
        """The blocks on the text positions of x's rows -> the last position's hidden state [k, 1, C] and
        each layer's keys and values [k, H, T, D]."""
        cache = self._cache(len(rows), self.schedule.step_starts[1])  # the text positions only
        rows = torch.from_numpy(rows).to(self.device)
        last = self.transformer.forward_blocks(x, condition, rope, cache, 0, rows=rows)[:, -1:]
        return last, cache.keys, cache.values

    def rope(self, scale_index: int, positions: np.ndarray):
        positions = torch.from_numpy(positions).to(self.device)
        if scale_index == 0:
            return self.transformer.text_rope(positions)
        return self.transformer.scale_rope([scale_index], positions)

    def step(self, scale_index: int, x: torch.Tensor, condition, rope):
        hidden = self.transformer.forward_blocks(x, condition, rope, self.cache, self._cache_start(scale_index))
        # scale 0: only the last text position's logits are used
        return self.transformer.logits(hidden[:, -1:] if scale_index == 0 else hidden, condition), hidden

    def _cache_start(self, scale_index: int) -> int:
        """Where scale si's keys go in the cache: its sequence start less the positions pruning left out."""
        return self.schedule.step_starts[scale_index] - self.pruned

    def pruned_step(self, scale_index: int, x: torch.Tensor, condition, rope, previous: torch.Tensor, ratio: float):
        """step() on the scale's pivotal tokens only (hart.models.pruning): x [R, n*n, C], previous [R, m*m, C]
        the last scale's hidden states. Only the kept tokens' keys enter the cache, packed: cache positions
        are not sequence positions (RoPE carries those), so later scales attend to exactly the kept ones."""
        n = self.schedule.patch_nums[scale_index]
        kept = max(1, n * n - int(n * n * ratio))
        index = pivotal_tokens(x, kept)  # [R, kept]
        own = self.transformer.forward_blocks(take_tokens(x, index), condition,
                                              tuple(take_tokens(t, index) for t in rope), self.cache,
                                              self._cache_start(scale_index))
        self.pruned += n * n - kept
        hidden = restore(previous[:len(x)], n, index, own)  # [R, n*n, C]; conditional rows first, as x's
        return self.transformer.logits(hidden, condition), hidden

    def check_approximations(self, approximate) -> None:
        """The PyTorch backend runs every approximation."""

    def keep_conditional(self, condition, batch: int):
        self.cache.keys = [k[:batch] for k in self.cache.keys]
        self.cache.values = [v[:batch] for v in self.cache.values]
        return self.take_condition(condition, np.arange(batch))

    def candidates(self, guided: torch.Tensor, top_k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """With top-k on, only the k best per token leave the device (the full-row rule's exact result
        up to ties at the k-th value)."""
        batch, tokens, vocab = guided.shape
        if not 0 < top_k < vocab:
            return guided.float().cpu().numpy().reshape(batch * tokens, vocab), None
        values, ids = guided.topk(top_k, dim=-1)
        return values.float().cpu().numpy().reshape(batch * tokens, -1), ids.cpu().numpy().reshape(batch * tokens, -1)

    def update(self, scale_index: int, f_hat: torch.Tensor, ids: np.ndarray, soft: SoftCodes | None):
        f_hat = f_hat + self.quantizer.scale_contribution(scale_index, tokens_to_grid(self._codes(ids, soft)))
        next_input = self.quantizer.next_input(f_hat, scale_index + 1).to(self.dtype)
        return f_hat, self.transformer.embed_scale(next_input, scale_index + 1).repeat(2, 1, 1)

    def sample_residual(self, hidden: torch.Tensor, ids: np.ndarray, noise: np.ndarray, guidance: float) -> torch.Tensor:
        codes = self.quantizer.codebook(self._ids(ids))  # hard codes condition the head, also with Gumbel on
        codes = codes.to(self.dtype).repeat(len(hidden) // len(codes), 1, 1)  # [R, N*N, C_vae]: hidden's rows
        rows = self.transformer.residual_condition(hidden, codes)
        residual = self._sampler(len(noise)).sample(self.model.residual_head, rows.flatten(0, 1), guidance,
                                                    torch.from_numpy(noise).to(self.device))
        return residual.view(len(ids), *codes.shape[1:])

    def _sampler(self, steps: int) -> ResidualSampler:
        """The residual head's sampler for `steps` DDPM steps (the model's own, or fewer: hart.approximations)."""
        if steps != self.residual_sampler.num_steps:
            return ResidualSampler(dataclasses.replace(self.model.config.residual_head, sampling_steps=steps))
        return self.residual_sampler

    def final(self, f_hat: torch.Tensor, ids: np.ndarray, soft: SoftCodes | None, residual: torch.Tensor | None):
        codes = self._codes(ids, soft)
        codes = codes if residual is None else codes + residual
        return f_hat + self.quantizer.scale_contribution(self.schedule.num_scales - 1, tokens_to_grid(codes))

    def decode(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.model.tokenizer.decode_latent(f_hat).float().cpu()

    def encode_image(self, images: np.ndarray) -> tuple[list[np.ndarray], torch.Tensor]:
        tokens = self.model.tokenizer.encode(torch.from_numpy(images).to(self.device, self.dtype))
        return [ids.cpu().numpy() for ids in tokens.ids], tokens.residual

    def quantize(self, latents: np.ndarray) -> tuple[list[np.ndarray], torch.Tensor]:
        ids, residual = self.quantizer.encode(torch.from_numpy(np.ascontiguousarray(latents)).to(self.device))
        return [i.cpu().numpy() for i in ids], residual

    @staticmethod
    def latents(f_hat: torch.Tensor) -> np.ndarray:
        return f_hat.float().cpu().numpy()

    def decode_latents(self, latents: np.ndarray) -> torch.Tensor:
        return self.decode(torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).to(self.device))

    def host(self, array: torch.Tensor) -> torch.Tensor:
        return array.cpu()

    def host_ids(self, ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(ids)

    def synchronize(self) -> None:
        synchronize(self.device)


class HARTPipeline:
    """Text-to-image with a HARTModel on one device and dtype."""

    def __init__(self, model: HARTModel, device: str | torch.device = "auto", dtype: str | torch.dtype = "fp32"):
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.eval().to(self.device, self.dtype)
        self.config = model.config
        self.loop = GenerationLoop(self.config, TorchBackend(self.model, self.device, self.dtype))

    @classmethod
    def from_pretrained(cls, model: str = "tiny", device: str = "auto", dtype: str = "fp32",
                        text_encoder: str | None = None) -> "HARTPipeline":
        from hart.checkpoints import load_pretrained

        return cls(load_pretrained(model, text_encoder), device, dtype)

    def __call__(self, prompts: list[str], **kwargs) -> list[Image.Image]:
        return self.generate(prompts, **kwargs).pil_images()

    @torch.inference_mode()
    def generate(self, prompts: list[str], seed: int | Sequence[int] = 0, size: tuple[int, int] | None = None,
                 **kwargs):
        """GenerationLoop.generate on this model (same arguments). size=(W, H) pixels larger than the trained
        size draws a canvas window by window (hart.canvas.draw; the result's `images` are numpy)."""
        if size is not None:
            from hart.canvas import draw

            return draw(self.loop, prompts, size, seed, **kwargs)
        return self.loop.generate(prompts, seed=seed, **kwargs)

    @torch.inference_mode()
    def edit(self, image: Image.Image, mask: Image.Image | np.ndarray, prompt: str, seed: int | Sequence[int] = 0,
             num_images: int = 1, **kwargs) -> list[Image.Image]:
        """Redraw the white region of `mask` (same size as `image`) from `prompt`; keep the rest.

        Images of another size are fitted to the canvas as hart.images says (centred square, Lanczos).
        `num_images` edits with seeds seed, seed + 1, ...; other arguments are GenerationLoop.edit's
        (threshold, fill, paste, feather) and generate's (cfg, top_k, ...)."""
        from hart.images import fit_image, fit_mask

        size = self.config.image_size
        pixels, region = fit_image(image, size), fit_mask(mask, image.size, size)
        seeds = [seed + i for i in range(num_images)] if isinstance(seed, int) else list(seed)
        result = self.loop.edit(np.stack([pixels] * len(seeds)), np.stack([region] * len(seeds)),
                                [prompt] * len(seeds), seed=seeds, **kwargs)
        return result.pil_images()

    @torch.inference_mode()
    def outpaint(self, image: Image.Image, size: tuple[int, int], prompt: str, anchor: str = "center",
                 seed: int | Sequence[int] = 0, num_images: int = 1, **kwargs) -> list[Image.Image]:
        """Extend `image` (at its own size, any size up to `size`) to a canvas of `size` (W, H) pixels larger
        than the trained size, placed at `anchor`; its pixels are kept exactly. `num_images` as edit();
        other arguments are hart.canvas.outpaint's (order, threshold, paste) and generate's (cfg, ...)."""
        from hart.canvas import outpaint

        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)
        seeds = [seed + i for i in range(num_images)] if isinstance(seed, int) else list(seed)
        return outpaint(self.loop, pixels, [prompt] * len(seeds), size, anchor, seeds, **kwargs).pil_images()
