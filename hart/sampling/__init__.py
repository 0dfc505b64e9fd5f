"""Sampling in torch: guided token sampling on top of the portable sampler, and the residual sampler."""

from hart.sampling.residual import ResidualSampler
from hart.sampling.tokens import SampledScale, guide, sample_scale

__all__ = ["ResidualSampler", "SampledScale", "guide", "sample_scale"]
