"""Shared machinery with no science in it: errors, paths, atomic files and folders, npy streams, progress, the restricted unpickler."""
