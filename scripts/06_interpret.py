#!/usr/bin/env python
"""Step 06: contexts, quantile samples, frequent tokens, logit lens and nearest SAE features per component.

The logic lives in darkmatter/pipeline/ (see the step table in darkmatter/pipeline/table.py);
`--help` lists this step's flags first.
"""

import sys

from darkmatter.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(6))
