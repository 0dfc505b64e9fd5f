"""hart: an edge-first re-implementation of HART (Hybrid Autoregressive Transformer, ICLR 2025).

The public API is imported lazily, so `import hart.portable` or the ONNX runtime never pull torch.
"""

__version__ = "0.1.0"

_LAZY = {
    "HARTConfig": "hart.config",
    "PRESETS": "hart.config",
    "HARTPipeline": "hart.pipeline",
    "Generation": "hart.pipeline",
    "HARTModel": "hart.components",
    "load_pretrained": "hart.checkpoints",
    "save_model": "hart.checkpoints",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hart' has no attribute {name!r}")
