"""earshot's talking-face codec: the file format (container), the payload streams (streams),
encoding and decoding a call (call)."""
