"""Hyper-parameter search (Lange 2021): one Optuna study per scope, resumable, parallel, assembled into a submission."""
