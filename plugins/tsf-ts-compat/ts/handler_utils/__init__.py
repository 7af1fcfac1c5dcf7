"""TorchServe-compatible helpers used inside handlers."""
