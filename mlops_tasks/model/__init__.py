"""Models: features and scoring, training, evaluation gates, artifacts, reproduction and
deployment."""
