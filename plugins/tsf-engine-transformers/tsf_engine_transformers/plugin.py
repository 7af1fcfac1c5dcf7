"""Registers the ``transformers`` engine (imported only when a model uses it: torch stays out
of the front end)."""

from tsf import hookimpl


@hookimpl
def tsf_register_engines() -> dict:
    return {"transformers": "tsf_engine_transformers.engine:TransformersEngine"}
