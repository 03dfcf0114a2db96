#!/usr/bin/env python
"""Step 06: top/bottom activating contexts, quantile samples, frequent tokens, logit lens and nearest SAE features per component; writes interpretations.json and components.md.

Run from the repository root after `pip install -e .`; `--help` lists the shared flags.
"""

import sys

from darkmatter.cli import main
from darkmatter.steps import step6_interpret

if __name__ == "__main__":
    sys.exit(main(6, __doc__, step6_interpret))
