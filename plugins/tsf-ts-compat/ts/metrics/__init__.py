"""TorchServe-compatible metric types: the metrics themselves are tsf's context.metrics."""
