"""Worker processes, seen from the front end: the typed messages and the framing on their
socket (shared with the worker process, :mod:`tsf.runtime`), starting them without fork(),
supervising them (pools, restarts, memory limits, their output), per-model requirements and
``tsf check-archive``.

May import: ``archives`` and everything below it.  Never imports torch.
"""
