"""edgeship: declarative compile-and-ship for edge inference chips."""

__version__ = "0.1.0"
