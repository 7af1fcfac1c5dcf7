"""``ts.context``: the Context handlers receive is tsf's, which implements TorchServe's API."""

from tsf.context import Context, RequestProcessor

__all__ = ["Context", "RequestProcessor"]
