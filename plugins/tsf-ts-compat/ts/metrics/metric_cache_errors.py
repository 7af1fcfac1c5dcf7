"""The errors ``context.metrics`` raises, under TorchServe's names."""

from tsf.runtime.handler_metrics import MetricNotFound

MetricsCacheError = Exception
MetricsCacheKeyError = MetricNotFound
MetricsCacheTypeError = TypeError
MetricsCacheValueError = ValueError

__all__ = ["MetricsCacheError", "MetricsCacheKeyError", "MetricsCacheTypeError",
           "MetricsCacheValueError"]
