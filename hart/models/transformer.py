"""HART's autoregressive next-scale transformer (the ~693M-parameter part of the 0.7B model).

Text enters twice: as T prefix tokens in the same self-attention (no cross-attention, no padding
mask), and pooled into one vector that drives every block's AdaLN. Image tokens of scale si are
the quantizer's running latent f_hat, area-downsampled to that scale, embedded by `latent_in`.
The model is a set of pure functions of tensors; the pipeline owns the loop and the cache.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from hart.config import HARTConfig
from hart.models.kv_cache import KVCache
from hart.models.layers import AdaLNHeadNorm, Block, RMSNorm
from hart.models.rope import scale_rope, text_rope
from hart.portable.scales import ScaleSchedule


@dataclass
class Condition:
    """The pooled text condition of a batch: one vector per sample for the blocks and the head."""

    blocks: torch.Tensor  # [B, C], pooled as config.transformer.cond_pooling says
    head: torch.Tensor  # [B, C], always max-pooled (HART's head ignores the pooling option)


class HARTTransformer(nn.Module):
    def __init__(self, config: HARTConfig):
        super().__init__()
        t = config.transformer
        self.patch_nums = config.patch_nums
        self.schedule = ScaleSchedule(config.patch_nums, config.text.max_tokens)
        self.cond_pooling = t.cond_pooling
        self.head_dim, self.rope_theta = t.head_dim, t.rope_theta

        self.latent_in = nn.Linear(config.tokenizer.latent_channels, t.width)
        self.context_norm = RMSNorm(config.text.dim, t.norm_eps) if t.context_norm else None
        self.context_in = nn.Linear(config.text.dim, t.width)
        self.level_embed = nn.Embedding(config.num_scales, t.width)  # 0 = text, si = scale si
        attn_scale = t.attn_scale / t.head_dim**0.5
        self.blocks = nn.ModuleList(
            Block(t.width, t.heads, t.mlp_hidden, attn_scale, t.norm_eps, layer_index=i) for i in range(t.depth))
        self.head_norm = AdaLNHeadNorm(t.width, t.norm_eps)
        self.head = nn.Linear(t.width, config.tokenizer.vocab_size)
        self.residual_norm = RMSNorm(t.width, t.norm_eps)  # builds the residual head's condition

    # ------------------------------------------------------------------------------------ inputs
    def embed_context(self, context: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Condition]:
        """context [B, T, D_txt], mask [B, T] bool -> prefix tokens [B, T, C] and the pooled condition."""
        if self.context_norm is not None:
            context = self.context_norm(context)
        embedded = self.context_in(context)
        if self.cond_pooling == "max":
            pooled = embedded.max(dim=1).values
        else:  # mean over real tokens, in the official order of operations
            weights = mask.unsqueeze(-1).to(embedded.dtype)
            pooled = (embedded * weights / weights.sum(1, keepdim=True).clamp(min=1)).sum(1)
        condition = Condition(blocks=pooled, head=embedded.max(dim=1).values)
        return embedded + self.level_embed.weight[0], condition

    def embed_scale(self, latents: torch.Tensor, scale_index: int) -> torch.Tensor:
        """latents [B, n*n, C_vae] (f_hat area-downsampled to scale si) -> tokens [B, n*n, C]."""
        return self.latent_in(latents) + self.level_embed.weight[scale_index]

    def text_rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return text_rope(positions, self.head_dim, self.rope_theta)

    def scale_rope(self, scales: range | list[int], offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables of image scales; `offsets` [B] = position of each sample's last text token."""
        return scale_rope(self.patch_nums, scales, offsets, self.head_dim, self.rope_theta)

    # ------------------------------------------------------------------------------------ body
    def forward_blocks(self, x: torch.Tensor, condition: Condition, rope: tuple[torch.Tensor, torch.Tensor],
                       cache: KVCache | None = None, start: int = 0, mask: torch.Tensor | None = None,
                       rows: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, C] at sequence positions start..start+L -> final hidden states [B, L, C].

        rows [B']: x holds only these rows of the condition's batch (a shared text prefix); the modulation
        is still computed for every row of the condition, so its matmul sees the batch it always sees."""
        for block in self.blocks:
            x = block(x, condition.blocks, rope, cache, start, mask, rows)
        return x

    def logits(self, hidden: torch.Tensor, condition: Condition) -> torch.Tensor:
        """hidden [B, L, C] -> float32 logits [B, L, V]."""
        return self.head(self.head_norm(hidden, condition.head)).float()

    def residual_condition(self, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Condition of the residual head: norm(h_last + latent_in(codebook[sampled id])), [B, n, C]."""
        return self.residual_norm(hidden + self.latent_in(codes))

    # ------------------------------------------------------------------------------------ training
    def block_causal_mask(self, device: torch.device) -> torch.Tensor:
        """[S, S] bool, True where a query may attend: level(query) >= level(key); text sees all text."""
        levels = torch.as_tensor(self.schedule.levels(), device=device)
        return levels[:, None] >= levels[None, :]

    def forward_train(self, context: torch.Tensor, context_mask: torch.Tensor, context_positions: torch.Tensor,
                      scale_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass over the whole sequence with the block-causal mask.

        scale_inputs [B, L-1, C_vae]: f_hat of scales 0..K-2 area-downsampled to scales 1..K-1
        (see MultiScaleQuantizer.teacher_forcing_inputs). Returns logits for every image token
        [B, L, V] (the first from the last text position) and the last scale's hidden states.
        """
        tokens, condition = self.embed_context(context, context_mask)
        levels = torch.as_tensor(self.schedule.levels()[self.schedule.context_tokens:], device=tokens.device)
        x = torch.cat((tokens, self.latent_in(scale_inputs) + self.level_embed(levels)), dim=1)
        text_cos, text_sin = self.text_rope(context_positions)
        image_cos, image_sin = self.scale_rope(range(1, len(self.patch_nums)), context_positions[:, -1])
        rope = (torch.cat((text_cos, image_cos), 1), torch.cat((text_sin, image_sin), 1))
        hidden = self.forward_blocks(x, condition, rope, mask=self.block_causal_mask(x.device))
        last = self.patch_nums[-1] ** 2
        return self.logits(hidden[:, self.schedule.context_tokens - 1:], condition), hidden[:, -last:]
