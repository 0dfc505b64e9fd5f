"""The one end-to-end loop: prompts -> text context -> next-scale token sampling -> residual -> image.

    text encoder ─► context (B, T, D) ─► [cond; uncond] (2B) ─► prefix tokens + pooled condition
    for si, n in scales:  transformer step on n*n tokens (KV cache grows) ─► logits ─► guidance
                          ─► sample ids (portable RNG) ─► f_hat += Φ(up(codebook[ids]))
                          ─► next input = area_down(f_hat) ─► embedded, repeated for both halves
    last scale:           residual head, S steps per token ─► f_hat += codebook[ids] + residual
    decoder(f_hat) ─► images in [0, 1]

Everything else (models, samplers, cache, quantizer) is a component this file calls in order.
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from hart.components import HARTModel
from hart.device import resolve_device, resolve_dtype, synchronize
from hart.models.kv_cache import StaticKVCache
from hart.portable import rng
from hart.portable.sampling import sampling_settings
from hart.portable.scales import ScaleSchedule
from hart.sampling import ResidualSampler, guide, sample_scale
from hart.text import check_prompts
from hart.tokenizer.quantizer import tokens_to_grid

log = logging.getLogger(__name__)


@dataclass
class StageEvent:
    """Reported after each stage: "text", "scale_<si>", "residual" (or "codes" without it), "decode"."""

    stage: str
    seconds: float
    scale_index: int | None = None
    f_hat: torch.Tensor | None = None  # [B, C_vae, N, N] after this scale (coarse-to-fine previews)


@dataclass
class Generation:
    images: torch.Tensor  # [B, 3, H, W] float32 in [0, 1], on the CPU
    ids: list[torch.Tensor]  # per scale [B, n*n] int64
    residual: torch.Tensor | None  # [B, N*N, C_vae] from the residual head, None if disabled
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds ("scale_3", "decode", ...)

    def pil_images(self) -> list[Image.Image]:
        return to_pil(self.images)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]


class _StageClock:
    """Times stages (synchronising the GPU first) and forwards events to a callback."""

    def __init__(self, device: torch.device, callback: Callable[[StageEvent], None] | None, bar: tqdm | None):
        self.device, self.callback, self.bar = device, callback, bar
        self.timings: dict[str, float] = {}
        self.started = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self.started = time.perf_counter()

    def stop(self, stage: str, scale_index: int | None = None, f_hat: torch.Tensor | None = None) -> None:
        synchronize(self.device)
        seconds = time.perf_counter() - self.started
        self.timings[stage] = seconds
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(StageEvent(stage, seconds, scale_index, f_hat))


class HARTPipeline:
    def __init__(self, model: HARTModel, device: str | torch.device = "auto", dtype: str | torch.dtype = "fp32"):
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.eval().to(self.device, self.dtype)
        self.config = model.config
        self.schedule = ScaleSchedule(self.config.patch_nums, self.config.text.max_tokens)
        self.residual_sampler = ResidualSampler(self.config.residual_head)

    @classmethod
    def from_pretrained(cls, model: str = "tiny", device: str = "auto", dtype: str = "fp32",
                        text_encoder: str | None = None) -> "HARTPipeline":
        from hart.checkpoints import load_pretrained

        return cls(load_pretrained(model, text_encoder), device, dtype)

    def __call__(self, prompts: list[str], **kwargs) -> list[Image.Image]:
        return self.generate(prompts, **kwargs).pil_images()

    @torch.inference_mode()
    def generate(self, prompts: list[str], seed: int | Sequence[int] = 0, cfg: float | None = None,
                 top_k: int | Sequence[int] | None = None, top_p: float | None = None,
                 temperature: float | None = None, gumbel: bool | None = None, residual: bool = True,
                 residual_guidance: float | None = None, progress: bool = False,
                 callback: Callable[[StageEvent], None] | None = None) -> Generation:
        """Generate one image per prompt. Unset sampling arguments take the model config's defaults.

        seed: an int (image i uses seed + i) or one seed per prompt. top_k: one value or one per scale
        (0 keeps the whole vocabulary). residual=False gives HART's discrete-only images.
        residual_guidance: the residual head's guidance as a share of the last scale's (HART: 1).
        """
        prompts = check_prompts(prompts)
        seeds = rng.resolve_seeds(seed, len(prompts))
        defaults = asdict(self.config.sampling)
        cfg, top_ks, top_p, temperature, residual_guidance = sampling_settings(
            defaults, self.config.num_scales, cfg, top_k, top_p, temperature, residual_guidance)
        gumbel = defaults["gumbel"] if gumbel is None else bool(gumbel)
        model, schedule, batch = self.model, self.schedule, len(prompts)
        transformer, quantizer = model.transformer, model.tokenizer.quantizer
        last = schedule.num_scales - 1
        bar = tqdm(total=schedule.num_scales + 3, desc="hart", unit="stage", leave=False) if progress else None
        clock = _StageClock(self.device, callback, bar)

        clock.start()
        context = model.text_encoder.encode(prompts).to(self.device).with_unconditional()  # 2B rows
        tokens, condition = transformer.embed_context(context.hidden.to(self.dtype), context.mask)
        clock.stop("text")

        t = self.config.transformer
        cache = StaticKVCache(t.depth, 2 * batch, t.heads, schedule.sequence_length, t.head_dim, self.dtype,
                              self.device)
        offsets = context.positions[:, -1]  # 2D RoPE starts after each sample's last real text token
        latent = self.config.tokenizer.latent_channels
        f_hat = torch.zeros(batch, latent, self.config.latent_size, self.config.latent_size, device=self.device)
        x, ids_per_scale = tokens, []
        for si in range(schedule.num_scales):
            clock.start()
            rope = transformer.text_rope(context.positions) if si == 0 else transformer.scale_rope([si], offsets)
            hidden = transformer.forward_blocks(x, condition, rope, cache, schedule.step_starts[si])
            logits = transformer.logits(hidden[:, -1:] if si == 0 else hidden, condition)  # scale 0: last text token
            guidance = schedule.guidance(si, cfg)
            sampled = sample_scale(guide(logits, guidance), seeds, si, top_ks[si], top_p, temperature,
                                   schedule.progress(si) if gumbel else None)
            ids_per_scale.append(sampled.ids)
            hard_codes = quantizer.codebook(sampled.ids)  # [B, n, C_vae] float32
            codes = hard_codes if sampled.soft_weights is None else \
                torch.einsum("bnk,bnkc->bnc", sampled.soft_weights, quantizer.codebook(sampled.candidates))
            if si < last:
                f_hat = f_hat + quantizer.scale_contribution(si, tokens_to_grid(codes))
                next_input = quantizer.next_input(f_hat, si + 1).to(self.dtype)
                x = transformer.embed_scale(next_input, si + 1).repeat(2, 1, 1)
            clock.stop(f"scale_{si}", si, f_hat if si < last else None)

        clock.start()
        residual_tokens = None
        if residual:
            cond_rows = transformer.residual_condition(hidden, hard_codes.to(self.dtype).repeat(2, 1, 1))
            tokens_last = hard_codes.shape[1]
            noise = torch.from_numpy(rng.residual_noise(seeds, self.residual_sampler.num_steps, tokens_last, latent))
            residual_tokens = self.residual_sampler.sample(model.residual_head, cond_rows.flatten(0, 1),
                                                           schedule.guidance(last, cfg) * residual_guidance,
                                                           noise.to(self.device))
            residual_tokens = residual_tokens.view(batch, tokens_last, latent)
            codes = codes + residual_tokens
        f_hat = f_hat + quantizer.scale_contribution(last, tokens_to_grid(codes))
        clock.stop("residual" if residual else "codes", last, f_hat)

        clock.start()
        images = model.tokenizer.decode_latent(f_hat).float().cpu()
        clock.stop("decode")
        if bar is not None:
            bar.close()
        return Generation(images, [i.cpu() for i in ids_per_scale],
                          None if residual_tokens is None else residual_tokens.cpu(), seeds, clock.timings)
