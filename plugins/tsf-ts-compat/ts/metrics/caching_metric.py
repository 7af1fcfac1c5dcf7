"""``CachingMetric``: what ``context.metrics.add_metric_to_cache`` returns."""

from tsf.runtime.handler_metrics import CachedMetric as CachingMetric

__all__ = ["CachingMetric"]
