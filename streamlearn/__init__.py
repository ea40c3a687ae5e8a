"""streamlearn: online learning for production."""

__version__ = "0.1.0"
