#!/usr/bin/env python
"""Step 04: PCA-whiten the residual, FastICA over seeds, stability, the Gaussian control, sources.

The logic lives in darkmatter/pipeline/ (see the step table in darkmatter/pipeline/table.py);
`--help` lists this step's flags first.
"""

import sys

from darkmatter.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(4))
