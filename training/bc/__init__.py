"""Behaviour cloning: demonstration samples, feature cache, trainer (``theia train-policy``)."""
