"""Generative serving inside a worker, and what crosses the worker boundary for it.

* :mod:`.request`: a generation or embedding request, checked once by the front end's OpenAI
  routes and again by the worker (it may also arrive raw on ``/predictions``), and the JSON the
  worker sends back (``choices``, ``usage``, ``timing``).
* :mod:`.engine`: the interface an engine plugin implements (a transformers step loop, vLLM),
  and the outbox it reports tokens through.
* :mod:`.handler`: the ``llm`` handler, which builds the engine a model asks for from the
  engines plugins register (``tsf_register_engines``).

It is part of the worker layer: torch is imported only by the engines, never here.
"""
