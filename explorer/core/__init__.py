"""Lowest layer: the error type, ranks, typed options, atomic file writes and digests, file formats by
their header, settings (paths, environment, device). Imports nothing else from explorer."""
