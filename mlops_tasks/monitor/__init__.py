"""Monitoring: drift statistics and reports, and the retrain policy."""
