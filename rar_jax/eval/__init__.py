"""Evaluation: HealthBench scoring (and, later, GPQA-Diamond, judge alignment, tables)."""
