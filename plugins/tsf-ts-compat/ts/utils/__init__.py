"""TorchServe-compatible utilities for handlers."""
