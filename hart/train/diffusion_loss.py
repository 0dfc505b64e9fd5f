"""IDDPM's hybrid loss for the residual head: MSE on the noise + the variational bound for the variance.

With a learned-range variance the model outputs eps and v. The MSE term trains eps; the VB term
(KL between the true posterior q(x_{t-1} | x_t, x_0) and the model's, with eps frozen, in bits)
trains v; at t = 0 the VB term is the discretised Gaussian decoder NLL. This is what HART's
DiffLoss optimises (through MAR and IDDPM), with the sampler's arithmetic (hart.sampling.diffusion).
"""

import math

import torch

from hart.models.residual_head import ResidualHead
from hart.portable.schedule import DiffusionSchedule
from hart.sampling.diffusion import Diffusion


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log p(x) for data in [-1, 1] quantised to 256 levels (IDDPM's decoder likelihood), in nats."""
    centered, inv_std = x - mean, torch.exp(-log_scale)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return -torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2).pow(2) * torch.exp(-logvar2))


class DiffusionLoss:
    """The hybrid loss on the full (not respaced) schedule, a step per row, through the sampler's `Diffusion`."""

    def __init__(self, schedule: DiffusionSchedule, device: torch.device):
        self.diffusion = Diffusion(schedule, device)

    @property
    def num_steps(self) -> int:
        return self.diffusion.num_steps

    def __call__(self, head: ResidualHead, x0: torch.Tensor, cond: torch.Tensor, step: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:
        """x0 [N, C] (residual / latent_scale), cond [N, C_t], step [N] indices, noise [N, C] -> mean loss."""
        diffusion = self.diffusion
        x_t = diffusion.add_noise(x0, step, noise)
        out = head(x_t, diffusion.timesteps[step], cond).float()
        eps, variance = out.chunk(2, dim=1)
        mse = (noise - eps).pow(2).mean(1)

        true_mean = diffusion.posterior_mean(x0, x_t, step)
        true_log_variance = diffusion.at("posterior_log_variance_clipped", step)
        mean = diffusion.posterior_mean(diffusion.predict_x0(x_t, eps.detach(), step), x_t, step)
        log_variance = diffusion.log_variance(variance, step)
        kl = _normal_kl(true_mean, true_log_variance, mean, log_variance).mean(1) / math.log(2.0)
        nll = discretized_gaussian_nll(x0, mean, 0.5 * log_variance).mean(1) / math.log(2.0)
        vb = torch.where(step == 0, nll, kl)
        return (mse + vb).mean()
