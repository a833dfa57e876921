"""Encoding models: array backends, estimators, metrics, validation splits, fitting one subject."""
