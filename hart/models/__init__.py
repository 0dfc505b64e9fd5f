"""The networks: the next-scale transformer and the residual diffusion head (pure tensor functions)."""

from hart.models.residual_head import ResidualHead
from hart.models.transformer import Condition, HARTTransformer

__all__ = ["Condition", "HARTTransformer", "ResidualHead"]
