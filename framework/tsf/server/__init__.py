"""The HTTP adapters: Tornado handlers for the inference, management and metrics APIs, KServe v1
and v2, workflows, and the listeners with their HTTP/1 connections (``http1``: a JSON error for
every malformed request).  They parse HTTP, call the data plane
(:mod:`tsf.dataplane`) and write answers in their protocol's shape.

May import: the data plane and everything below it; never ``grpc_api`` or the composition root.
"""
