"""The Open Inference Protocol (KServe v2): tensor types, request parsing and result encoding.

``datatypes`` and ``requests`` run in the front end (no torch); ``tensors`` runs in workers.

May import: ``workers`` (the messages) and everything below it.
"""
