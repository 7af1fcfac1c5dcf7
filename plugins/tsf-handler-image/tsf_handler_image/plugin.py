"""Entry point: registers ``image_classifier`` lazily (torch is imported only in workers)."""

from tsf import hookimpl


@hookimpl
def tsf_register_handlers() -> dict:
    return {"image_classifier": "tsf_handler_image.classifier:ImageClassifier"}
