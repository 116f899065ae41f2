"""Drift-aware ML retraining: the plain-Python task layer (never imports Airflow)."""

from __future__ import annotations

__version__ = "0.1.0"
