"""Evaluation: Table-4-style reports (SC / PQ / O per task), standard metric families and human-rating sheets."""
