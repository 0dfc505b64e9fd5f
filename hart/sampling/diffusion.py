"""The residual head's diffusion arithmetic in torch, shared by sampling and training.

One object holds a `DiffusionSchedule` and does what both need: noising (training), predicting x0,
the posterior mean, the learned-range log variance and one reverse step (sampling). `step` is either
a Python int (sampling: every row at the same step) or a LongTensor [N] (training: a step per row).

An int step reads each constant as a Python float: the float32 values are exact as floats, so the
products are the float32 ones, and traced export graphs keep them as literals (no table, no gather).
A tensor step gathers float32 tables into columns [N, 1]. Both give the same float32 arithmetic.
"""

import numpy as np
import torch

from hart.portable.schedule import DiffusionSchedule

COEFFICIENTS = ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                "sqrt_recipm1_alphas_cumprod", "posterior_mean_coef1", "posterior_mean_coef2",
                "posterior_log_variance_clipped", "log_betas")

Step = int | torch.Tensor


class Diffusion:
    def __init__(self, schedule: DiffusionSchedule, device: torch.device | str = "cpu"):
        self.schedule = schedule
        self.timesteps = torch.as_tensor(schedule.timesteps, device=device)
        self.tables = {name: torch.as_tensor(np.asarray(getattr(schedule, name)), dtype=torch.float32, device=device)
                       for name in COEFFICIENTS}

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    def at(self, name: str, step: Step) -> float | torch.Tensor:
        """Constant `name` at `step`: a Python float for an int step, a column [N, 1] for steps [N]."""
        if isinstance(step, torch.Tensor):
            return self.tables[name][step][:, None]
        return float(getattr(self.schedule, name)[step])

    def add_noise(self, x0: torch.Tensor, step: Step, noise: torch.Tensor) -> torch.Tensor:
        """q(x_t | x0): sqrt(abar) x0 + sqrt(1 - abar) noise."""
        return self.at("sqrt_alphas_cumprod", step) * x0 + self.at("sqrt_one_minus_alphas_cumprod", step) * noise

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, step: Step, clip: bool = False) -> torch.Tensor:
        """x0 from the predicted noise; `clip` clamps it to the data range [-1, 1]."""
        x0 = self.at("sqrt_recip_alphas_cumprod", step) * x_t - self.at("sqrt_recipm1_alphas_cumprod", step) * eps
        return x0.clamp(-1, 1) if clip else x0

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, step: Step) -> torch.Tensor:
        """The mean of q(x_{t-1} | x_t, x0)."""
        return self.at("posterior_mean_coef1", step) * x0 + self.at("posterior_mean_coef2", step) * x_t

    def log_variance(self, v: torch.Tensor, step: Step) -> torch.Tensor:
        """The learned range: v = 1 gives log(beta), v = -1 the clipped posterior log variance."""
        frac = (v + 1) / 2
        return frac * self.at("log_betas", step) + (1 - frac) * self.at("posterior_log_variance_clipped", step)

    def step(self, x_t: torch.Tensor, eps: torch.Tensor, v: torch.Tensor, step: Step, noise: torch.Tensor | None,
             temperature: float = 1.0, clip: bool = True) -> torch.Tensor:
        """One ancestral reverse step x_t -> x_{t-1}; noise None (the last step) returns the mean."""
        mean = self.posterior_mean(self.predict_x0(x_t, eps, step, clip), x_t, step)
        if noise is None:
            return mean
        return mean + torch.exp(0.5 * self.log_variance(v, step)) * noise * temperature
