"""The run store, its workers, run kinds (by name) and the run folder's files."""
