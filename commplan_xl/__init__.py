"""commplan: send customers a planned series of emails about their order."""

__version__ = "0.1.0"
