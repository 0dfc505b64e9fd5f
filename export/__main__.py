"""python -m export onnx|coreml [args]: the same as `hart export onnx|coreml [args]` (run from the repository root)."""

import sys

from hart.cli import main

if __name__ == "__main__":  # spawned export workers import this module too
    raise SystemExit(main(["export", *sys.argv[1:]]))
