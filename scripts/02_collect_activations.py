#!/usr/bin/env python
"""Step 02: text -> token windows -> activations at the hook -> SAE reconstruction in chunks -> residual; writes activations.npy, residuals.npy, tokens.npy, token_index.npy and sae_stats.json.

Run from the repository root after `pip install -e .`; `--help` lists the shared flags.
"""

import sys

from darkmatter.cli import main
from darkmatter.steps import step2_collect

if __name__ == "__main__":
    sys.exit(main(2, __doc__, step2_collect))
