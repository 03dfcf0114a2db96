#!/usr/bin/env python
"""Step 08: aggregate every step into ica_dark_matter_results.json and report.md.

Run from the repository root after `pip install -e .`; `--help` lists the shared flags.
"""

import sys

from darkmatter.cli import main
from darkmatter.steps import step8_report

if __name__ == "__main__":
    sys.exit(main(8, __doc__, step8_report))
