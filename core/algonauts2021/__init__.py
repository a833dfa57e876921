"""The Algonauts 2021 challenge (videos): dataset, demo, pipeline, submission."""
