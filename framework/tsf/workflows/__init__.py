"""Workflows: pipelines of models and Python functions served as one endpoint (TorchServe's
``.war`` archives, ``/workflows`` and ``/wfpredict``).

May import: ``serving`` and everything below it.
"""
