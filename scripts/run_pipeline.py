#!/usr/bin/env python
"""Run steps 01 -> 08 in order with the same flags; stop at the first failure.

Example: python scripts/run_pipeline.py --preset smollm2-135m-local
"""

import sys

from darkmatter.cli import run_all

if __name__ == "__main__":
    sys.exit(run_all(sys.argv[1:]))
