"""Configuration: the server's settings (``settings``), TorchServe's ``config.properties`` keys
and file syntax (``properties``), TLS key material (``tls``), SageMaker's environment,
per-model options and autoscaling settings, and YAML parsed with a bound.

May import: ``errors``, ``json_body``.
"""
