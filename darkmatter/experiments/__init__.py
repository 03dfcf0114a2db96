"""Experiments around the pipeline: SAE training (used by step 01 too), the planted sweep and the
toy models of superposition."""
