"""The official text encoder: Qwen2-1.5B hidden states, read from a local folder (never downloaded).

HART tokenizes each prompt alone to exactly T = 300 tokens (right padding, truncation), prepends a
fixed instruction ("Enhanced prompt", tokenized without padding) for the forward pass only, keeps
the last T positions of the final (normed) hidden states and casts them to float32. The
instruction changes the features; no text is generated.
"""

from pathlib import Path

import torch

from hart.config import TextEncoderConfig
from hart.errors import CheckpointError, DependencyError
from hart.text.base import TextContext, check_prompts, positions_from_mask

# HART's instruction prefix (hart/utils/constants.py, `llm_system_prompt`): data the released
# features depend on, so it is reproduced verbatim.
HART_SYSTEM_PROMPT = """Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for image generation.

Examples:
- User Prompt: A cat sleeping -> A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.
- User Prompt: A busy city street -> A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.

Please generate only the enhanced description for the prompt below and DO NOT include any additional sentences. Start your response with "Enhanced Prompt:".

User Prompt:\n"""


class Qwen2TextEncoder:
    def __init__(self, config: TextEncoderConfig, path: str | Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise DependencyError("the Qwen2 text encoder needs transformers: pip install 'hart[official]'") from None
        path = Path(path)
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} is not a Qwen2 model folder (no config.json); pass the local "
                                  "Qwen2-VL-1.5B-Instruct folder with --text-encoder")
        self.config = config
        try:  # transformers raises many types for a folder that is not a model (and never runs its code here)
            self.words = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
            self.model = AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        except Exception as err:
            detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{path} is not a Qwen2 model folder transformers can load ({detail})") from None
        self.model = self.model.to(device=device, dtype=dtype).eval()
        if self.model.config.hidden_size != config.dim:
            raise CheckpointError(f"{path} has hidden size {self.model.config.hidden_size}; the transformer expects "
                                  f"text.dim={config.dim}")

    def _token_ids(self, text: str, padding: str) -> torch.Tensor:
        return self.words(text, return_tensors="pt", padding=padding, max_length=self.config.max_tokens,
                              truncation=True).input_ids[0]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextContext:
        prompts = check_prompts(prompts)
        device = self.model.device
        tokens = torch.stack([self._token_ids(p, "max_length") for p in prompts]).to(device)  # [B, T]
        mask = tokens != self.words.pad_token_id
        if self.config.system_prompt:
            prefix = self._token_ids(HART_SYSTEM_PROMPT, "longest").to(device).expand(len(prompts), -1)
            inputs = torch.cat((prefix, tokens), dim=1)
            attention = torch.cat((torch.ones_like(prefix, dtype=torch.bool), mask), dim=1)
        else:
            inputs, attention = tokens, mask
        # HART reads hidden_states[-1], which is the final-normed output, i.e. last_hidden_state.
        hidden = self.model(inputs, attention_mask=attention).last_hidden_state
        hidden = hidden[:, -tokens.shape[1]:].float()  # [B, T, D]
        return TextContext(hidden, mask, positions_from_mask(mask))
