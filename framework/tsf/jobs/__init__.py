"""Asynchronous jobs and offline batch inference: a job is a request whose answer is stored
instead of written to a socket.

The job store (:mod:`~tsf.jobs.store`: SQLite in the workspace, or Redis shared by replicas)
keeps jobs, their inputs and results; the runner (:mod:`~tsf.jobs.runner`) moves stored jobs to
the models' queues at background priority and stores what they answer; callbacks
(:mod:`~tsf.jobs.callbacks`) tell a client when its job ends.  ``tsf batch`` (``jobs/batch/``)
runs an archive's handler over a data set in worker processes, or over Ray Data.

May import: ``workflows`` and everything below it.
"""
