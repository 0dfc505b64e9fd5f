"""IDDPM's hybrid loss for the residual head: MSE on the noise + the variational bound for the variance.

With a learned-range variance the model outputs eps and v. The MSE term trains eps; the VB term
(KL between the true posterior q(x_{t-1} | x_t, x_0) and the model's, with eps frozen, in bits)
trains v; at t = 0 the VB term is the discretised Gaussian decoder NLL. This is what HART's
DiffLoss optimises (through MAR and IDDPM), written against our schedule arrays.
"""

import math

import numpy as np
import torch

from hart.models.residual_head import ResidualHead
from hart.portable.schedule import DiffusionSchedule


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
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2).pow(2) * torch.exp(-logvar2))


class DiffusionLoss:
    def __init__(self, schedule: DiffusionSchedule, device: torch.device):
        def table(name: str) -> torch.Tensor:
            return torch.as_tensor(np.asarray(getattr(schedule, name)), dtype=torch.float32, device=device)

        self.timesteps = torch.as_tensor(schedule.timesteps, device=device)
        self.tables = {name: table(name) for name in (
            "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
            "sqrt_recipm1_alphas_cumprod", "posterior_mean_coef1", "posterior_mean_coef2",
            "posterior_log_variance_clipped", "log_betas")}

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def __call__(self, head: ResidualHead, x0: torch.Tensor, cond: torch.Tensor, step: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:
        """x0 [N, C] (residual / latent_scale), cond [N, C_t], step [N] indices, noise [N, C] -> mean loss."""
        at = {name: values[step][:, None] for name, values in self.tables.items()}
        x_t = at["sqrt_alphas_cumprod"] * x0 + at["sqrt_one_minus_alphas_cumprod"] * noise
        out = head(x_t, self.timesteps[step], cond).float()
        eps, variance = out.chunk(2, dim=1)
        mse = (noise - eps).pow(2).mean(1)

        true_mean = at["posterior_mean_coef1"] * x0 + at["posterior_mean_coef2"] * x_t
        true_log_variance = at["posterior_log_variance_clipped"]
        x0_predicted = at["sqrt_recip_alphas_cumprod"] * x_t - at["sqrt_recipm1_alphas_cumprod"] * eps.detach()
        mean = at["posterior_mean_coef1"] * x0_predicted + at["posterior_mean_coef2"] * x_t
        frac = (variance + 1) / 2
        log_variance = frac * at["log_betas"] + (1 - frac) * at["posterior_log_variance_clipped"]
        kl = _normal_kl(true_mean, true_log_variance, mean, log_variance).mean(1) / math.log(2.0)
        nll = discretized_gaussian_nll(x0, mean, 0.5 * log_variance).mean(1) / math.log(2.0)
        vb = torch.where(step == 0, nll, kl)
        return (mse + vb).mean()
