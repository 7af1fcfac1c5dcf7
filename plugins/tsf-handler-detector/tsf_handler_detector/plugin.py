"""Entry point: registers ``object_detector`` lazily (torch is imported only in workers)."""

from tsf import hookimpl


@hookimpl
def tsf_register_handlers() -> dict:
    return {"object_detector": "tsf_handler_detector.detector:ObjectDetector"}
