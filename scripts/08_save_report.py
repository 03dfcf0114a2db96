#!/usr/bin/env python
"""Step 08: ica_dark_matter_results.json and report.md from every step's results.

The logic lives in darkmatter/pipeline/ (see the step table in darkmatter/pipeline/table.py);
`--help` lists this step's flags first.
"""

import sys

from darkmatter.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(8))
