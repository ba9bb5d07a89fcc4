"""Graph and spectral operations: pure tensor functions shared by every model."""
