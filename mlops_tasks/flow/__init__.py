"""Flows: the declarations, their step bodies, the run context and the worker preload."""
