"""python -m export onnx|coreml [args]: the same as `hart export onnx|coreml [args]` (run from the repository root)."""

import sys

from hart.cli import main

raise SystemExit(main(["export", *sys.argv[1:]]))
