"""Trained encoders (seed 004): a multi-subject head on a frozen or partly fine-tuned trunk."""
