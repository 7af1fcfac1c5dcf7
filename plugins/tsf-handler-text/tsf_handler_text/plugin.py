"""Entry point: registers ``text_classifier`` lazily (torch is imported only in workers)."""

from tsf import hookimpl


@hookimpl
def tsf_register_handlers() -> dict:
    return {"text_classifier": "tsf_handler_text.classifier:TextClassifier"}
