#!/usr/bin/env python
"""Step 07: excess kurtosis and sparsity of the ICA sources against the SAE features' activations; writes statistics.json and ica_vs_sae_kurtosis.png.

Run from the repository root after `pip install -e .`; `--help` lists the shared flags.
"""

import sys

from darkmatter.cli import main
from darkmatter.steps import step7_statistics

if __name__ == "__main__":
    sys.exit(main(7, __doc__, step7_statistics))
