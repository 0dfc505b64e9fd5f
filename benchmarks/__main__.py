"""python -m benchmarks [args]: the same as `hart bench [args]` (run from the repository root)."""

import sys

from hart.cli import main

raise SystemExit(main(["bench", *sys.argv[1:]]))
