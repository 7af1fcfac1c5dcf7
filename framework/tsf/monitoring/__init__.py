"""Model monitoring: data capture, ground-truth feedback, quality, fairness and drift.

Capture observes answered requests (the adapters hand each answer to
:meth:`~tsf.monitoring.monitor.Monitor.capture` after it is built): a sampled, size-capped
:class:`~tsf.monitoring.records.CaptureRecord` is appended to bounded buffers and nothing else
happens on the event loop.  Sink threads (:mod:`~tsf.monitoring.sinks`) write the records to
the sinks plugins provide (``tsf_register_capture_sinks``; JSON Lines files are built in); an
analysis thread (:mod:`~tsf.monitoring.analysis`) keeps predictions in a bounded SQLite store
(:mod:`~tsf.monitoring.store`) for ``POST /feedback``, and computes quality, fairness
(:mod:`~tsf.monitoring.quality`) and drift (:mod:`~tsf.monitoring.drift`), which
:mod:`~tsf.monitoring.metrics` exports to Prometheus with bounded label sets.

May import: ``serving`` and everything below it; the adapters and the data plane import it.
pandas and fairlearn are imported only by the analysis thread, when a model declares groups.
"""
