"""Autoscaling: the pure policy, the metric signals, and the loop that applies decisions."""
