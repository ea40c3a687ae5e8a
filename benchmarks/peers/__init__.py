"""Peers streamlearn is compared against: river in-process, deep-river in its own venv."""
