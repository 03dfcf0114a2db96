#!/usr/bin/env python
"""Step 01: report the environment, load the model and the SAE (training one for the offline preset), check the hook and W_dec shapes, write config.json and setup.json.

Run from the repository root after `pip install -e .`; `--help` lists the shared flags.
"""

import sys

from darkmatter.cli import main
from darkmatter.steps import step1_setup

if __name__ == "__main__":
    sys.exit(main(1, __doc__, step1_setup))
