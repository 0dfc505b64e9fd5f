"""Quiet the libraries an export drives: what they say by default tells a user nothing."""

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence what the exporters and quantizers say that tells a user nothing: torch.onnx's list of
    torchvision operators it skips, pytree FutureWarnings, onnxruntime's advice to pre-process before
    quantizing and onnx_ir's notes on deduplicated initializers. Real errors still raise."""
    noisy = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript",
                                                  "onnx_ir", "root")]
    levels = [logger.level for logger in noisy]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*pre-process.*")
        warnings.filterwarnings("ignore", message="# The axis name")  # dims the exporter merged, as intended
        for logger in noisy:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(noisy, levels):
                logger.setLevel(level)


