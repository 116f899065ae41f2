"""Prediction service: serves every model's production version, logs inference, takes labels."""
