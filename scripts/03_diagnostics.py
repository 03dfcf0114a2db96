#!/usr/bin/env python
"""Step 03: FVU, per-dimension excess kurtosis, a Gaussianity test and the full-spectrum PCA of the residual; writes diagnostics.json and two plots, and prints the decision-point verdict.

Run from the repository root after `pip install -e .`; `--help` lists the shared flags.
"""

import sys

from darkmatter.cli import main
from darkmatter.steps import step3_diagnostics

if __name__ == "__main__":
    sys.exit(main(3, __doc__, step3_diagnostics))
