"""The package version (a leaf module: any layer may import it without importing ``muva``'s exports)."""

__version__ = "0.1.0"
