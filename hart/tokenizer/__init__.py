"""HART's hybrid tokenizer: VQGAN encoder/decoder, multi-scale residual VQ and continuous residual."""

from hart.tokenizer.hybrid import HybridTokenizer, Tokens
from hart.tokenizer.quantizer import MultiScaleQuantizer

__all__ = ["HybridTokenizer", "MultiScaleQuantizer", "Tokens"]
