"""Sampling in torch: the residual head's sampler and its diffusion (token sampling is portable: hart.loop)."""

from hart.sampling.diffusion import Diffusion
from hart.sampling.residual import ResidualSampler

__all__ = ["Diffusion", "ResidualSampler"]
