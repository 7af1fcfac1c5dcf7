"""tsf-handler-detector: the ``object_detector`` handler."""
