#!/usr/bin/env python
"""Step 07: excess kurtosis and sparsity of ICA sources against SAE features.

The logic lives in darkmatter/pipeline/ (see the step table in darkmatter/pipeline/table.py);
`--help` lists this step's flags first.
"""

import sys

from darkmatter.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(7))
