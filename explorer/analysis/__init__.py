"""Analysis of checkpoints: prototype geometry, the joint maps, curves, decoding, the interpolation lab and the one evaluation path."""
