#!/usr/bin/env python
"""Step 02: activations at the hook → SAE reconstruction in chunks → residual, streamed to outputs/*.npy.

The logic lives in darkmatter/pipeline/ (see the step table in darkmatter/pipeline/table.py);
`--help` lists this step's flags first.
"""

import sys

from darkmatter.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(2))
