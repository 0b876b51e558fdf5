"""harmonic-installer: image a bare-metal server with Harmonic cOS."""

__version__ = "0.1.0"
