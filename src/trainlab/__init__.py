"""trainlab — train neural networks well, and see why it works."""

__version__ = "0.1.0"
