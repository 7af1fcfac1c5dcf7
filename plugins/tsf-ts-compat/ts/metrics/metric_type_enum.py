"""``MetricTypes``: the Prometheus kind of a handler metric."""

import enum


class MetricTypes(enum.Enum):
    """Counter, gauge or histogram; tsf's ``context.metrics`` takes a member or its value."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
