"""TorchServe-compatible handler base classes."""
