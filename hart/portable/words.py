"""Word-level prompt tokenization of the embedded model (numpy only; every runtime uses it).

Prompts are lower-cased and split into runs of letters; each word maps to 2 + its index in the
vocabulary (0 is padding, 1 is reserved for unknown words, which are refused instead). Ids are
right-padded to T, and the mask marks real words.
"""

import re

import numpy as np

from hart.errors import PromptError
from hart.portable import grammar

PAD_ID, UNKNOWN_ID = 0, 1
WORD_PATTERN = re.compile(r"[a-z]+")


def check_prompts(prompts: list[str]) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise PromptError(f"prompts must be a list of strings (got {type(prompts).__name__})")
    if not prompts:
        raise PromptError("no prompt given; pass at least one prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError(f"prompt {i + 1} is empty; every prompt needs at least one word")
    return list(prompts)


class WordTokenizer:
    def __init__(self, vocab: tuple[str, ...], max_tokens: int):
        self.vocab = tuple(vocab)
        self.max_tokens = max_tokens
        self.ids = {word: i + 2 for i, word in enumerate(self.vocab)}
        # a model whose words are exactly the caption grammar's was trained on its sentences only
        self.checks_grammar = grammar.speaks(self.vocab)

    @property
    def size(self) -> int:
        return len(self.vocab) + 2

    @staticmethod
    def _unknown(prompt: str, unknown: set[str]) -> str:
        """The words as the user typed them ('rød', not its letter runs 'r' and 'd'), at most 10."""
        if not unknown:
            return "no words"
        typed = sorted({token.strip(".,;:!?\"'()") for token in prompt.split()
                        if set(WORD_PATTERN.findall(token.lower())) & unknown or not WORD_PATTERN.search(token.lower())}
                       - {""})
        named = ", ".join(repr(w) for w in typed[:10]) + (f" and {len(typed) - 10} more" if len(typed) > 10 else "")
        return f"unknown word(s) {named}"

    def split(self, prompt: str) -> list[str]:
        return WORD_PATTERN.findall(prompt.lower())

    def __call__(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """prompts -> ids [B, T] int64 (right-padded) and mask [B, T] bool."""
        rows = []
        for i, prompt in enumerate(check_prompts(prompts)):
            words = self.split(prompt)
            unknown = set(words) - self.ids.keys()
            if not words or unknown:
                raise PromptError(f"prompt {i + 1} ({_shortened(prompt)}) has {self._unknown(prompt, unknown)}; "
                                  f"this model knows: {', '.join(sorted(self.vocab))}")
            if len(words) > self.max_tokens:
                raise PromptError(f"prompt {i + 1} has {len(words)} words; this model reads at most {self.max_tokens}")
            if self.checks_grammar:
                grammar.check_prompt(prompt, words, i + 1)
            rows.append([self.ids[w] for w in words] + [PAD_ID] * (self.max_tokens - len(words)))
        ids = np.array(rows, dtype=np.int64)
        return ids, ids != PAD_ID


def _shortened(prompt: str, limit: int = 80) -> str:
    return repr(prompt if len(prompt) <= limit else prompt[:limit] + "…")
