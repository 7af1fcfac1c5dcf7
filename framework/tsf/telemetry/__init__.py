"""Telemetry of the front end: Prometheus metrics (and the event-loop counters, gauges and
histograms behind the per-request series), OpenTelemetry tracing, log setup, and the redaction
of credentials from the request targets and URLs that logs and traces show.

May import: ``workers`` (the messages it records) and everything below it.
"""
