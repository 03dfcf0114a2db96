#!/usr/bin/env python
"""Run every step of the table (01 -> 08) in order with the same flags; stop at the first failure.

Example: python scripts/run_pipeline.py --preset smollm2-135m-local

With --layers 0,6,11 it trains (or loads) an SAE and analyses each layer in turn, into
<outputs>/layer_LL, and tabulates them in <outputs>/layers_summary.md.
"""

import sys

from darkmatter.pipeline.cli import run_all

if __name__ == "__main__":
    sys.exit(run_all(sys.argv[1:]))
