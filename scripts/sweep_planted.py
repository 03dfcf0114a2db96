#!/usr/bin/env python
"""Planted dark matter: how recovery by ICA, PCA and random directions falls as the noise,
the firing probability and the number of withheld features grow (one varied at a time from
the planted preset's defaults). Writes planted_sweep.json, planted_sweep.md and
planted_sweep.png to --outputs."""

from __future__ import annotations

import argparse
import sys

from darkmatter.sweeps import planted_sweep_main

if __name__ == "__main__":
    sys.exit(planted_sweep_main(sys.argv[1:], argparse.ArgumentParser(description=__doc__)))
