"""Entry point: registers ``image_segmenter`` lazily (torch is imported only in workers)."""

from tsf import hookimpl


@hookimpl
def tsf_register_handlers() -> dict:
    return {"image_segmenter": "tsf_handler_segmenter.segmenter:ImageSegmenter"}
