"""Serving models: the manager (register, roll out, scale, set default, unregister, submit), the
registry of versions, traffic splits and shadow traffic, autoscaling, health, the server's
lifecycle, start-up snapshots and the model-store watch.

May import: ``batching`` and everything below it.
"""
