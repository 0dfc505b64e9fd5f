"""The official model's Qwen2 text encoder as ONNX, through optimum's exporter.

optimum-onnx pins transformers below 4.58, so it cannot share an environment with transformers 5:
install `hart[onnx,onnx-qwen2]` in an environment of its own to export models that use Qwen2.
The export keeps optimum's graph (input_ids, attention_mask, position_ids -> last_hidden_state) and the
tokenizer.json, and records HART's instruction prefix as token ids, so a runtime needs only the
`tokenizers` library to reproduce hart.text.qwen2.Qwen2TextEncoder.
"""

import shutil
import tempfile
from pathlib import Path

from hart.config import TextEncoderConfig
from hart.errors import CheckpointError, DependencyError

FOLDER = "text_encoder"


def export_qwen2_text_encoder(qwen_dir: str | Path, target: Path, config: TextEncoderConfig) -> dict:
    """Write TARGET/text_encoder/{model.onnx[, model.onnx_data], tokenizer.json}; return manifest["text"]."""
    try:
        from optimum.exporters.onnx import main_export
        from transformers import AutoTokenizer
    except ImportError:
        raise DependencyError("exporting the Qwen2 text encoder needs optimum-onnx, which requires transformers "
                              "< 4.58: in an environment of its own run pip install -e '.[onnx,onnx-qwen2]'") from None
    from hart.text.qwen2 import HART_SYSTEM_PROMPT

    qwen_dir = Path(qwen_dir)
    if not (qwen_dir / "config.json").is_file():
        raise CheckpointError(f"{qwen_dir} is not a Qwen2 model folder (no config.json)")
    with tempfile.TemporaryDirectory() as scratch:
        main_export(str(qwen_dir), scratch, task="feature-extraction", local_files_only=True, do_validation=False)
        (target / FOLDER).mkdir(parents=True)
        for name in ("model.onnx", "model.onnx_data", "tokenizer.json"):
            if (Path(scratch) / name).exists():
                shutil.move(str(Path(scratch) / name), target / FOLDER / name)
    tokenizer = AutoTokenizer.from_pretrained(qwen_dir, local_files_only=True)
    prefix = tokenizer(HART_SYSTEM_PROMPT, padding="longest", max_length=config.max_tokens, truncation=True).input_ids
    return {
        "kind": "qwen2", "max_tokens": config.max_tokens, "dim": config.dim, "tokenizer_json": f"{FOLDER}/tokenizer.json",
        "pad_id": tokenizer.pad_token_id, "system_prompt_ids": prefix if config.system_prompt else [],
        "tokenization": "tokenizers' encode(prompt) (special tokens as the tokenizer adds them), cut to max_tokens, "
                        "right-padded with pad_id; mask = id != pad_id; the graph sees system_prompt_ids + ids with "
                        "mask 1 for the prefix, position ids 0..S-1, and the last max_tokens hidden states are kept",
        "system_prompt": "system_prompt_ids: HART's instruction prefix (its 'Enhanced prompt' text), tokenized once at "
                         "export; empty when the model was configured without it",
    }
