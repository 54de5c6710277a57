"""Demo stand-in for SGLang: only its version and where it was imported from matter."""

from sglang.version import __version__

__all__ = ["__version__"]
