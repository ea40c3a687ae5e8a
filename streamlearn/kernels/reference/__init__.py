"""The reference kernels in numpy: what runs without the compiled extension, and the oracle
the compiled kernels are tested against."""
