#!/usr/bin/env python
"""Optional: explain each component with an LLM and score the explanations by detection.

Off by default: set DARKMATTER_LLM (openai, or module:callable), or pass --baseline for the
deterministic token baseline. Reads feature_bank.json (step 06), writes autointerp.json.
The logic lives in darkmatter/pipeline/steps/autointerp_step.py.
"""

import sys

from darkmatter.pipeline.steps.autointerp_step import main

if __name__ == "__main__":
    sys.exit(main())
