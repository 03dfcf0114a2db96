#!/usr/bin/env python
"""Step 05: max |cos| of each ICA direction to the SAE decoder rows, against random and PCA baselines; writes similarity.json and ica_sae_similarity.png.

Run from the repository root after `pip install -e .`; `--help` lists the shared flags.
"""

import sys

from darkmatter.cli import main
from darkmatter.steps import step5_compare

if __name__ == "__main__":
    sys.exit(main(5, __doc__, step5_compare))
