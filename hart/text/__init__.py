"""Text encoders: the official Qwen2 features, the embedded model's word encoder, a random stand-in."""

from hart.text.base import TextContext, TextEncoder, check_prompts
from hart.text.random_features import RandomTextEncoder
from hart.text.words import WordTextEncoder

__all__ = ["RandomTextEncoder", "TextContext", "TextEncoder", "WordTextEncoder", "check_prompts"]
