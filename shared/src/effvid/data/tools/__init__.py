"""Dataset preparation console scripts: extract-frames, build-lmdb, build-lists."""
