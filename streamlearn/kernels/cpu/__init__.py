"""The compiled CPU kernels (C sources) and their binding."""
