"""Batching: each model version's bounded queue of jobs, and the batcher that fills batches and
hands them to the version's workers.

May import: ``telemetry`` and everything below it.
"""
