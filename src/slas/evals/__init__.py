"""Evaluation protocols (GenEval scoring rules, ...): pure functions over detections and results."""
