#!/usr/bin/env python
"""Step 03: FVU, excess kurtosis against a Gaussian surrogate, Gaussianity test and PCA of the residual.

The logic lives in darkmatter/pipeline/ (see the step table in darkmatter/pipeline/table.py);
`--help` lists this step's flags first.
"""

import sys

from darkmatter.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(3))
