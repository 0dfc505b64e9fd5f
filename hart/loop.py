"""The one generation loop: prompts -> text rows -> next-scale token sampling -> residual -> image.

    text       hidden, mask = encode_text(prompts); rows = [cond; uncond]        (portable.spec)
    scales     for si, n in patch_nums: logits, hidden = step(si, x, condition, rope(si))
               guided = guide(logits, cfg * progress[si]); ids = sample(guided, uniforms(seed, si))
               f_hat, x = update(si, f_hat, ids)                                  (si < K - 1)
    residual   residual = residual(hidden, ids, noise(seed), cfg * progress[K-1] * share)
    decode     f_hat = final(f_hat, ids, residual); images = decode(f_hat)

A two-object prompt of the embedded model runs this twice, once per object, and the two final latents
are joined token by token before the decode (hart/portable/compose.py). This file is the only place that
knows that order. A backend (PyTorch on any device and dtype, ONNX
Runtime, Core ML, the PyTorch export wrappers) supplies the compute on its own arrays; everything
between the graphs (settings, guidance, the portable RNG and sampler, forcing ids) happens here, in
numpy, so every backend draws the same tokens. The web and Swift ports follow this loop step by step
and replay the golden trace it writes (hart/golden.py). It imports no torch.
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hart.approximations import EXACT, Approximations
from hart.backend import Backend, ForcedTokens, SoftCodes  # noqa: F401 (re-exported)
from hart.config import HARTConfig
from hart.errors import ConfigError
from hart.portable import edit, grammar, rng
from hart.portable.compose import Composition
from hart.portable.compose import plan as compose_plan
from hart.portable.sampling import filter_logits, gumbel_weights, sample_categorical
from hart.portable.scales import ScaleSchedule
from hart.portable.schedule import diffusion_schedule
from hart.portable.spec import (NumpyOps, SamplingSettings, guidance_weight, guide, guided_rows, residual_guidance_weight,
                                rope_offsets, to_uint8)
from hart.portable.words import check_prompts
from hart.prefix import Prefix

log = logging.getLogger(__name__)


@dataclass
class StageEvent:
    """Reported after each stage: "text", "scale_<si>", "residual" (or "codes" without it), "decode"."""

    stage: str
    seconds: float
    scale_index: int | None = None
    f_hat: Any = None  # [B, C_vae, N, N] after this scale (coarse-to-fine previews), backend arrays


@dataclass
class Generation:
    images: Any  # [B, 3, H, W] float32 in [0, 1] on the host (numpy, or a CPU tensor from PyTorch)
    ids: list[Any]  # per scale [B, n*n] int64: the sampled ids (also where ids were forced)
    residual: Any | None  # [B, N*N, C_vae] from the residual head, None if disabled
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds ("scale_3", "decode", ...)
    discrete_images: Any | None = None  # the same tokens decoded without the residual (if asked)
    image_ids: list[np.ndarray] | None = None  # per scale [B, n*n]: the ids the image was made from (None: `ids`)
    latents: np.ndarray | None = None  # [B, C_vae, N, N] float32: the final f_hat (what a canvas stitches)
    discrete_latents: np.ndarray | None = None  # the same without the residual (discrete_too with decode=False)

    def pil_images(self) -> list:
        from PIL import Image

        return [Image.fromarray(p) for p in to_uint8(self.images)]


class _StageClock:
    """Times stages (synchronising the device first) and forwards events to a callback and a bar.

    The bar is made when the first stage ends, so a prompt refused by the text stage prints no bar."""

    def __init__(self, backend: Backend, callback: Callable[[StageEvent], None] | None,
                 make_bar: Callable[[], Any] | None):
        self.backend, self.callback, self.make_bar, self.bar = backend, callback, make_bar, None
        self.timings: dict[str, float] = {}
        self.started = 0.0

    def start(self) -> None:
        self.backend.synchronize()
        self.started = time.perf_counter()

    def stop(self, stage: str, scale_index: int | None = None, f_hat: Any = None) -> None:
        self.backend.synchronize()
        seconds = time.perf_counter() - self.started
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        if self.bar is None and self.make_bar is not None:
            self.bar = self.make_bar()
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(StageEvent(stage, seconds, scale_index, f_hat))


class GenerationLoop:
    """Drives one backend through HART's stages; `generate` is the whole public surface."""

    def __init__(self, config: HARTConfig, backend: Backend):
        self.config, self.backend = config, backend
        self.schedule = ScaleSchedule(config.patch_nums, config.text.max_tokens)
        head = config.residual_head
        self.residual_steps = diffusion_schedule(head.train_steps, head.sampling_steps).num_steps
        self._unconditional = None  # the unconditional row's text prefix (KV rows, logits), once computed
        # a model trained on the grammar's sentences only draws two objects by composing (hart.portable.compose)
        self.composes = config.text.kind == "words" and grammar.speaks(config.text.vocab)

    def settings(self, **overrides) -> SamplingSettings:
        return SamplingSettings.resolve(self.config.sampling, self.schedule.num_scales, **overrides)

    def generate(self, prompts: list[str], seed: int | Sequence[int] = 0, cfg: float | None = None,
                 top_k: int | Sequence[int] | None = None, top_p: float | None = None,
                 temperature: float | None = None, gumbel: bool | None = None, residual: bool = True,
                 residual_guidance: float | None = None, forced: ForcedTokens | None = None,
                 discrete_too: bool = False, show_progress: bool = False,
                 callback: Callable[[StageEvent], None] | None = None, decode: bool = True,
                 approximate: Approximations = EXACT, compose: bool = True) -> Generation:
        """Generate one image per prompt. Unset sampling arguments take the model config's defaults.

        seed: an int (image i uses seed + i) or one seed per prompt. top_k: one value or one per scale
        (0 keeps the whole vocabulary). residual=False gives HART's discrete-only images.
        residual_guidance: the residual head's guidance as a share of the last scale's (HART: 1).
        forced: tokens to take instead of the sampled ones (teacher forcing, or the kept tokens of an
        edit); the result still reports the sampled ids in `ids`, and the ids used in `image_ids`.
        discrete_too: also decode the same tokens
        without the residual. callback: sees every stage (with f_hat after each scale, for previews).
        show_progress: a progress bar over the stages. `latents` always holds the final f_hat; decode=False
        skips the image (a canvas decodes its stitched latent once). approximate: opt-in speed-ups that
        change the image (hart.approximations; the default is exact HART). compose: draw a two-object prompt
        of the embedded model as two one-object images joined (hart.portable.compose); False: in one pass.
        """
        prompts = check_prompts(prompts)
        seeds = rng.resolve_seeds(seed, len(prompts))
        settings = self.settings(cfg=cfg, top_k=top_k, top_p=top_p, temperature=temperature,
                                 residual_guidance=residual_guidance, gumbel=gumbel)
        if settings.gumbel and not self.backend.soft_codes:
            raise ConfigError("Gumbel soft codes (--gumbel) need the PyTorch backend; exported graphs take hard ids")
        approximate.check(self.schedule.num_scales, self.config.residual_head.train_steps)
        self.backend.check_approximations(approximate)
        if forced is not None and len(forced.ids) != self.schedule.num_scales:
            raise ConfigError(f"forced ids need one array per scale ({self.schedule.num_scales}), got {len(forced.ids)}")
        joined = compose_plan(prompts, seeds) if compose and self.composes else None
        passes = [len(prompts)] + ([] if joined is None or not len(joined.composed) else [len(joined.composed)])
        make_bar = None
        if show_progress:
            from tqdm.auto import tqdm

            step = self.backend.max_batch or len(prompts)
            stages = (self.schedule.num_scales + 3) * sum(-(-rows // step) for rows in passes)
            make_bar = lambda: tqdm(total=stages, desc="hart", unit="stage", leave=False)  # noqa: E731
        clock = _StageClock(self.backend, callback, make_bar)
        run = lambda rows, row_seeds, row_forced, row_decode: self._rows(  # noqa: E731
            rows, row_seeds, settings, residual, row_forced, discrete_too, clock, row_decode, approximate)
        try:
            if len(passes) == 1:
                return run(prompts if joined is None else joined.first, seeds, forced, decode)
            first = run(joined.first, seeds, forced, False)
            second = run(joined.second, [seeds[i] for i in joined.composed], _second_forced(joined, forced, first),
                         False)
            return self._join(joined, first, second, decode, discrete_too, clock)
        finally:
            if clock.bar is not None:
                clock.bar.close()

    def _rows(self, prompts: list[str], seeds: list[int], settings: SamplingSettings, residual: bool,
              forced: ForcedTokens | None, discrete_too: bool, clock: "_StageClock", decode: bool,
              approximate: Approximations) -> Generation:
        """One pass over rows, max_batch at a time."""
        step = self.backend.max_batch or len(prompts)
        parts = [self._run(prompts[i:i + step], seeds[i:i + step], settings, residual,
                           None if forced is None else forced.rows(i, i + step), discrete_too, clock, decode,
                           approximate)
                 for i in range(0, len(prompts), step)]
        return self._merge(parts, seeds, clock.timings)

    def _join(self, joined: Composition, first: Generation, second: Generation, decode: bool,
              discrete_too: bool, clock: "_StageClock") -> Generation:
        """Each composed image from its two passes (hart.portable.compose): per token, the second object's
        image where its place is nearer; the images decoded from the joined latents."""
        ops = self.backend.ops  # ids and residual are the backend's host arrays; image ids and latents numpy

        def tokens(a, b, on=ops):
            return None if a is None else joined.join(on, a, b, int(round(np.sqrt(a.shape[1]))))

        def grid(a, b):
            return None if a is None else joined.join(NumpyOps, a, b, a.shape[-1], token_axis=2)

        latents, discrete_latents = grid(first.latents, second.latents), grid(first.discrete_latents,
                                                                               second.discrete_latents)
        images = discrete = None
        if decode:
            clock.start()
            images = self.backend.decode_latents(latents)
            discrete = self.backend.decode_latents(discrete_latents) if discrete_too else None
            clock.stop("decode")
        image_ids = None if first.image_ids is None else [tokens(a, b, NumpyOps)
                                                          for a, b in zip(first.image_ids, second.image_ids)]
        return Generation(images, [tokens(a, b) for a, b in zip(first.ids, second.ids)],
                          tokens(first.residual, second.residual), first.seeds, clock.timings, discrete, image_ids,
                          latents, None if decode else discrete_latents)

    def edit(self, images: np.ndarray, masks: np.ndarray, prompts: list[str], seed: int | Sequence[int] = 0,
             threshold: float = 0.0, fill: bool = True, paste: bool = True, feather: bool = True,
             **kwargs) -> Generation:
        """Redraw the masked region of each image from its prompt and keep the rest (hart.portable.edit).

        images [B, S, S, 3] float32 in [0, 1] at the model's size S; masks [B, S, S] bool, True = edit.
        threshold: a token is resampled when more than this share of its cell is masked (0: any part; the
        best of 0, 0.25, 0.5 on test scenes, see hart.portable.edit). fill: encode
        with the masked region filled by the surrounding colour. paste: put the original pixels back
        outside the mask (feathered). Other arguments are generate's; `images` of the result are numpy.
        """
        size = self.config.image_size
        images, masks = np.asarray(images, dtype=np.float32), np.asarray(masks, dtype=bool)
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or masks.shape != images.shape[:3]:
            raise ConfigError(f"edit takes images [B, {size}, {size}, 3] and masks [B, {size}, {size}] (got "
                              f"{list(images.shape)} and {list(masks.shape)})")
        encoded = np.stack([edit.fill_masked(i, m) for i, m in zip(images, masks)]) if fill else images
        ids, residual = self.backend.encode_image(np.ascontiguousarray(encoded.transpose(0, 3, 1, 2)))
        edited = [edit.edited_tokens(m, self.config.patch_nums, threshold) for m in masks]
        keep = [~np.stack(scale) for scale in zip(*edited)]  # per scale [B, n*n]
        result = self.generate(prompts, seed=seed, forced=ForcedTokens(ids, keep, residual), **kwargs)
        drawn = np.asarray(result.images, dtype=np.float32).transpose(0, 2, 3, 1)
        if paste:
            drawn = np.stack([edit.paste(d, i, edit.paste_weights(m, feather)) for d, i, m in zip(drawn, images, masks)])
        result.images = np.ascontiguousarray(drawn.transpose(0, 3, 1, 2))
        return result

    def encode_latents(self, images: np.ndarray) -> np.ndarray:
        """images [B, 3, S, S] float32 in [0, 1] -> [B, C_vae, N, N] float32: the tokenizer's latent of each
        image (every scale's encoder ids and the residual summed by the backend's own update graphs), the
        latent a canvas keeps where an image is given. Decoded, it is the tokenizer's reconstruction."""
        backend, last = self.backend, self.schedule.num_scales - 1
        ids, residual = backend.encode_image(np.ascontiguousarray(images, dtype=np.float32))
        f_hat = backend.begin(len(images))
        for si in range(last):
            f_hat, _ = backend.update(si, f_hat, ids[si], None)
        return backend.latents(backend.final(f_hat, ids[last], None, residual))

    def _run(self, prompts: list[str], seeds: list[int], settings: SamplingSettings, residual: bool,
             forced: ForcedTokens | None, discrete_too: bool, clock: _StageClock, decode: bool = True,
             approximate: Approximations = EXACT) -> Generation:
        backend, schedule, batch = self.backend, self.schedule, len(prompts)
        last, vocab = schedule.num_scales - 1, self.config.tokenizer.vocab_size
        unguided = approximate.first_unguided(schedule.num_scales)  # from this scale on: conditional rows only
        pruned = approximate.first_pruned(schedule.num_scales)  # from this scale on: the pivotal tokens only
        conditional = np.arange(batch)
        clock.start()
        prefix = Prefix(prompts, getattr(backend, "shares_prefix", False), self._unconditional)
        features, mask = backend.encode_text(prefix.prompts)
        feature_rows, mask_rows, positions = prefix.rows(backend.ops, *guided_rows(backend.ops, features, mask))
        x, condition = backend.condition(feature_rows, mask_rows)
        clock.stop("text")

        f_hat = backend.begin(batch)
        sampled, used, soft = [], [], None
        for si, n in enumerate(schedule.patch_nums):
            clock.start()
            if si >= unguided:  # update() made both rows' next input; the unconditional ones are not needed
                x = backend.ops.take(x, conditional)
                if si == unguided:
                    condition, positions = backend.keep_conditional(condition, batch), positions[:batch]
            if si == 0:  # the text prefix, shared where the backend can
                logits, hidden, condition, positions = prefix.step(backend, x, condition, positions)
                self._unconditional = prefix.kept if prefix.shared else self._unconditional
            elif si >= pruned:  # PyTorch only (other backends refuse it in check_approximations)
                logits, hidden = backend.pruned_step(si, x, condition, backend.rope(si, rope_offsets(positions)),
                                                     hidden, approximate.prune_ratio)
            else:
                logits, hidden = backend.step(si, x, condition, backend.rope(si, rope_offsets(positions)))
            guided = guide(logits, guidance_weight(settings.cfg, schedule.progress(si))) if si < unguided else logits
            values, candidates = backend.candidates(guided, settings.top_k[si])
            uniforms = rng.token_uniforms(seeds, si, n * n).reshape(-1)
            ids = sample_categorical(values, uniforms, settings.top_k[si], settings.top_p, settings.temperature,
                                     candidates, vocab).reshape(batch, n * n)
            sampled.append(ids)
            if settings.gumbel:
                soft = self._soft_codes(values, candidates, seeds, si, settings, batch, n * n)
            if forced is not None:
                taken = np.asarray(forced.ids[si], dtype=np.int64).reshape(batch, n * n)
                ids = taken if forced.keep is None else np.where(np.asarray(forced.keep[si]).reshape(batch, n * n),
                                                                 taken, ids)
            used.append(ids)
            if si < last:
                f_hat, x = backend.update(si, f_hat, ids, soft)
            clock.stop(f"scale_{si}", si, f_hat if si < last else None)

        clock.start()
        residual_tokens = None
        if residual:
            tokens = schedule.patch_nums[-1] ** 2
            steps = approximate.residual_steps or self.residual_steps
            noise = rng.residual_noise(seeds, steps, tokens, self.config.tokenizer.latent_channels)
            weight = residual_guidance_weight(settings.cfg, schedule.progress(last), settings.residual_guidance) \
                if last < unguided else 0.0
            residual_tokens = backend.sample_residual(hidden, ids, noise, weight)
            if forced is not None and forced.residual is not None:
                keep = np.ones((batch, tokens), dtype=bool) if forced.keep is None else \
                    np.asarray(forced.keep[last]).reshape(batch, tokens)
                residual_tokens = backend.ops.where(keep[..., None], forced.residual, residual_tokens)
        f_final = backend.final(f_hat, ids, soft, residual_tokens)
        clock.stop("residual" if residual else "codes", last, f_final)

        clock.start()
        images = backend.decode(f_final) if decode else None
        f_discrete = backend.final(f_hat, ids, soft, None) if discrete_too else None
        discrete = backend.decode(f_discrete) if discrete_too and decode else None
        clock.stop("decode" if decode else "latents")
        return Generation(images, [backend.host_ids(i) for i in sampled],
                          None if residual_tokens is None else backend.host(residual_tokens), seeds,
                          discrete_images=discrete, image_ids=None if forced is None else used,
                          latents=backend.latents(f_final),
                          discrete_latents=None if decode or f_discrete is None else backend.latents(f_discrete))

    def _soft_codes(self, values: np.ndarray, candidates: np.ndarray | None, seeds: list[int], si: int,
                    settings: SamplingSettings, batch: int, tokens: int) -> SoftCodes:
        """Gumbel-softmax weights over the kept candidates (HART's ratio: progress[si])."""
        vocab = self.config.tokenizer.vocab_size
        if candidates is None:
            candidates = np.broadcast_to(np.arange(vocab), values.shape)
        noise = rng.gumbel_uniforms(seeds, si, candidates.reshape(batch, tokens, -1), vocab)
        filtered = filter_logits(values, settings.top_k[si], settings.top_p, settings.temperature, vocab)
        weights = gumbel_weights(filtered, noise.reshape(batch * tokens, -1), self.schedule.progress(si))
        return SoftCodes(weights.astype(np.float32).reshape(batch, tokens, -1),
                         np.ascontiguousarray(candidates).reshape(batch, tokens, -1))

    def _merge(self, parts: list[Generation], seeds: list[int], timings: dict[str, float]) -> Generation:
        if len(parts) == 1:
            parts[0].timings = timings
            return parts[0]
        concat = self.backend.ops.concat
        first = parts[0]

        def joined(name: str):
            return None if getattr(first, name) is None else concat([getattr(p, name) for p in parts])

        ids = [concat(list(scale)) for scale in zip(*(p.ids for p in parts))]
        image_ids = None if first.image_ids is None else [np.concatenate(scale) for scale in
                                                          zip(*(p.image_ids for p in parts))]
        latents, discrete_latents = (None if getattr(first, name) is None else
                                     np.concatenate([getattr(p, name) for p in parts])
                                     for name in ("latents", "discrete_latents"))
        return Generation(joined("images"), ids, joined("residual"), seeds, timings, joined("discrete_images"),
                          image_ids, latents, discrete_latents)


def _second_forced(joined: Composition, forced: ForcedTokens | None, first: Generation) -> ForcedTokens | None:
    """The second pass's forcing: the batch's own for those images, plus the first pass's scale 0 where no
    background is named (hart.portable.compose); none when nothing is forced or tied."""
    base = None if forced is None else forced.take(joined.composed)
    if not joined.tied.any() or (base is not None and base.keep is None):  # every token forced already
        return base
    drawn = first.ids[0] if first.image_ids is None else first.image_ids[0]  # [B, 1]: what each image used
    ids, keep = joined.second_forcing(None if base is None else base.ids, None if base is None else base.keep,
                                      drawn, [np.asarray(i).shape[1] for i in first.ids])
    return ForcedTokens(ids, keep, None if base is None else base.residual)
