#!/usr/bin/env python
"""Step 04: PCA-whiten the residual to k components and run FastICA over several seeds; writes ica_directions.npy, ica_activations.npy, the mixing/unmixing matrices and ica.json.

Run from the repository root after `pip install -e .`; `--help` lists the shared flags.
"""

import sys

from darkmatter.cli import main
from darkmatter.steps import step4_ica

if __name__ == "__main__":
    sys.exit(main(4, __doc__, step4_ica))
