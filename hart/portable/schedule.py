"""The residual head's diffusion schedule as plain arrays (numpy float64, no torch).

HART (through MAR and IDDPM) trains on a 1000-step cosine schedule and samples with it respaced to
8 steps. The respaced process keeps the cumulative alphas at the retained timesteps
{0, 143, 285, 428, 571, 714, 856, 999} and re-derives betas from them; the network is still called
with the original timestep numbers. Sampling is ancestral DDPM with a learned-range variance:

    x0    = clip(sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps, -1, 1)
    mean  = coef1_t x0 + coef2_t x_t
    log_var = frac log(beta_t) + (1 - frac) log(posterior_var_t, clipped),  frac = (v + 1) / 2
    x_{t-1} = mean + exp(log_var / 2) noise temperature     (no noise at the last step)

The constants are computed in float64 in exactly the order IDDPM uses, then rounded to float32,
so they match the official code bit for bit and can be written into an export manifest.
"""

import math
from dataclasses import dataclass

import numpy as np


def cosine_betas(train_steps: int, max_beta: float = 0.999) -> np.ndarray:
    """IDDPM's cosine schedule: abar(t) = cos^2(((t / T) + 0.008) / 1.008 * pi / 2)."""

    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - abar((i + 1) / train_steps) / abar(i / train_steps), max_beta)
                     for i in range(train_steps)], dtype=np.float64)


def respaced_timesteps(train_steps: int, sampling_steps: int) -> list[int]:
    """IDDPM's space_timesteps(T, "S") for one section: evenly strided, rounded half to even."""
    if sampling_steps == 1:
        return [0]
    stride = (train_steps - 1) / (sampling_steps - 1)
    steps, position = [], 0.0
    for _ in range(sampling_steps):
        steps.append(round(position))
        position += stride
    return sorted(set(steps))


@dataclass(frozen=True)
class DiffusionSchedule:
    """Per-step float32 constants, indexed by step i = 0 (least noise) .. S-1 (pure noise)."""

    timesteps: np.ndarray  # original timestep numbers fed to the network, int64 [S]
    betas: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray
    posterior_log_variance_clipped: np.ndarray  # min_log of the learned range
    log_betas: np.ndarray  # max_log of the learned range
    sqrt_alphas_cumprod: np.ndarray  # for noising during training
    sqrt_one_minus_alphas_cumprod: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def as_lists(self) -> dict[str, list]:
        """Plain lists for manifests (every value a float32 rounded to Python float)."""
        return {name: getattr(self, name).tolist() for name in self.__dataclass_fields__}


def diffusion_schedule(train_steps: int = 1000, sampling_steps: int | None = None) -> DiffusionSchedule:
    """The cosine schedule, respaced to `sampling_steps` (None: all `train_steps`)."""
    base_betas = cosine_betas(train_steps)
    keep = respaced_timesteps(train_steps, sampling_steps or train_steps)
    base_alphas_cumprod = np.cumprod(1.0 - base_betas)
    betas, last = [], 1.0
    for t in keep:
        betas.append(1 - base_alphas_cumprod[t] / last)
        last = base_alphas_cumprod[t]
    betas = np.array(betas, dtype=np.float64)

    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    if len(betas) > 1:
        posterior_log_variance_clipped = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
    else:  # a single step never adds noise; any finite value will do
        posterior_log_variance_clipped = np.log(betas)

    def f32(array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float64).astype(np.float32)

    return DiffusionSchedule(
        timesteps=np.array(keep, dtype=np.int64),
        betas=f32(betas),
        sqrt_recip_alphas_cumprod=f32(np.sqrt(1.0 / alphas_cumprod)),
        sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1.0 / alphas_cumprod - 1)),
        posterior_mean_coef1=f32(betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)),
        posterior_mean_coef2=f32((1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod)),
        posterior_log_variance_clipped=f32(posterior_log_variance_clipped),
        log_betas=f32(np.log(betas)),
        sqrt_alphas_cumprod=f32(np.sqrt(alphas_cumprod)),
        sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - alphas_cumprod)),
    )
