#!/usr/bin/env python
"""Step 01: report the environment, open the source of activations, load or train the SAE,
check the hook and W_dec shapes; write config.json and setup.json.

The logic lives in darkmatter/pipeline/ (see the step table in darkmatter/pipeline/table.py);
`--help` lists this step's flags first.
"""

import sys

from darkmatter.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(1))
