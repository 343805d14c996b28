"""DSA-110 batch imaging engine: UVH5 subbands -> Measurement Sets -> images -> mosaics."""

__version__ = "0.1.0"
