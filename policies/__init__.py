"""Torch networks used at inference: Theia encoder, policy heads, normalisation."""
