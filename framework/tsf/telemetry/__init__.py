"""Telemetry of the front end: Prometheus metrics (and the event-loop counters, gauges and
histograms behind the per-request series), OpenTelemetry tracing, and log setup.

May import: ``workers`` (the messages it records) and everything below it.
"""
