"""The outputs folder: paths, crash-consistent commits, shards, checkpoints, the writer lock."""
