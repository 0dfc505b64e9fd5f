"""Quiet the libraries an export drives: what they say by default tells a user nothing."""

import contextlib
import logging
import warnings
from collections.abc import Iterator


class _BelowError(logging.Filter):
    """Drops records below ERROR logged on the root logger itself (onnxruntime's quantizers call
    logging.info / logging.warning directly); records of named loggers, hart's own, pass by it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence what the exporters and quantizers say that tells a user nothing: torch.onnx's list of
    torchvision operators it skips, pytree FutureWarnings, onnxruntime's advice to pre-process before
    quantizing and onnx_ir's notes on deduplicated initializers. Real errors still raise."""
    noisy = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript",
                                                  "onnx_ir", "onnxruntime")]
    levels = [logger.level for logger in noisy]
    root = logging.getLogger()
    below_error = _BelowError()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*pre-process.*")
        warnings.filterwarnings("ignore", message="# The axis name")  # dims the exporter merged, as intended
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # onnxruntime's HQQ
        for logger in noisy:
            logger.setLevel(logging.ERROR)
        root.addFilter(below_error)
        try:
            yield
        finally:
            root.removeFilter(below_error)
            for logger, level in zip(noisy, levels):
                logger.setLevel(level)
