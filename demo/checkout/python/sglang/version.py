__version__ = "0.0.0"  # written by the demo
