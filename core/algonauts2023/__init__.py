"""The Algonauts 2023 challenge (NSD images): dataset, demo, pipeline, submission, comparison."""
