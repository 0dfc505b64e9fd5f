"""The residual head's sampling loop: respaced ancestral DDPM with HART's guidance.

Guidance mixes the noise predictions of the conditional and unconditional halves as
eps = (1 + s) eps_cond - s eps_uncond, with s the transformer's guidance at the last scale times the
model's sampling.residual_guidance (HART: 1; the caller multiplies); both
halves see the same noisy input and the variance comes from the conditional half. All noise is an
input: [S, N, C_vae] normals, block 0 being x_T and block k the noise added after step k.
"""

import torch

from hart.config import ResidualHeadConfig
from hart.models.residual_head import ResidualHead
from hart.portable.schedule import DiffusionSchedule, diffusion_schedule
from hart.sampling.diffusion import Diffusion


class ResidualSampler:
    def __init__(self, config: ResidualHeadConfig):
        self.schedule: DiffusionSchedule = diffusion_schedule(config.train_steps, config.sampling_steps)
        self.diffusion = Diffusion(self.schedule)
        self.latent_scale = config.latent_scale
        self.clip_denoised = config.clip_denoised

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @torch.no_grad()
    def sample(self, head: ResidualHead, cond: torch.Tensor, guidance: float | torch.Tensor, noise: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
        """cond [2N, C] (conditional rows then unconditional) or [N, C] without guidance.

        noise [S, N, C_vae] float32. Returns the residual [N, C_vae] in latent units (x latent_scale).
        A tensor `guidance` (exported graphs) always runs both halves and applies the quirk below as
        arithmetic; a float skips the unconditional half when it cannot matter.
        """
        n = noise.shape[1]
        # Guidance 0 changes nothing, and HART takes its unguided code path when the scale is exactly
        # 1 (a quirk kept for fidelity): both need only the conditional rows.
        if isinstance(guidance, torch.Tensor):
            guided, guidance = True, torch.where(guidance == 1, torch.zeros_like(guidance), guidance)
        else:
            guided = cond.shape[0] == 2 * n and guidance not in (0.0, 1.0)
        if cond.shape[0] == 2 * n and not guided:
            cond = cond[:n]
        x = noise[0].float()  # the chain stays float32 whatever the head's dtype
        for k, step in enumerate(reversed(range(self.num_steps))):
            timesteps = torch.full((cond.shape[0],), int(self.schedule.timesteps[step]), device=cond.device)
            head_in = (torch.cat((x, x)) if guided else x).to(cond.dtype)
            out = head(head_in, timesteps, cond).float()
            eps, variance = out[:n, :head.latent_channels], out[:n, head.latent_channels:]
            if guided:
                eps = eps * (1 + guidance) - guidance * out[n:, :head.latent_channels]
            step_noise = noise[k + 1].float() if step > 0 else None
            x = self.diffusion.step(x, eps, variance, step, step_noise, temperature, self.clip_denoised)
        return x * self.latent_scale
