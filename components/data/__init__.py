"""Data layer shared by both papers: corpus synthesis, download, faces, audio, shards, datasets."""
