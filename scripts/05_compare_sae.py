#!/usr/bin/env python
"""Step 05: ICA directions and every baseline against the SAE decoder rows (and planted ground truth).

The logic lives in darkmatter/pipeline/ (see the step table in darkmatter/pipeline/table.py);
`--help` lists this step's flags first.
"""

import sys

from darkmatter.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(5))
