"""Closed-loop evaluation on the sim twin: episodes, outcomes, timings and rollout videos."""
