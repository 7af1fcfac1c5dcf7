"""The floor: a bare Tornado server that answers every POST with a constant, on one core.

    python benchmarks/bare_tornado.py --port 8000 [--event-loop auto|asyncio|uvloop]

No routing, parsing, batching or metrics: what is left is Tornado's own HTTP work, so its
CPU time per request is the least any Tornado front end can spend.  The event loop is chosen
as ``tsf serve`` chooses it.
"""

from __future__ import annotations

import argparse
import asyncio

import tornado.web

from tsf.cli import event_loop_factory


class Constant(tornado.web.RequestHandler):
    """Answers ``0`` as JSON, whatever the path and body."""

    def post(self, *_: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(b"0")

    def get(self, *_: str) -> None:
        self.finish(b"ok")


async def serve(port: int) -> None:
    tornado.web.Application([(r"/.*", Constant)]).listen(port, address="127.0.0.1")
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--event-loop", default="auto")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=event_loop_factory(args.event_loop)) as runner:
        runner.run(serve(args.port))


if __name__ == "__main__":
    main()
