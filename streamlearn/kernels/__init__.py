"""Compute for the algorithms in core: the compiled CPU kernels, device selection, CPU limits."""
