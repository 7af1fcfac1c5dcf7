"""OpenAI-compatible routes on the inference address: chat completions, completions,
embeddings and models, with TorchServe 0.12's ``/predictions/{model}[/{version}]/v1/...``
paths as aliases.

* :mod:`.spec` owns the protocol: its routes, how a body becomes a
  :class:`~tsf.generation.request.GenerationRequest`, and every answer's shape (completions,
  server-sent event chunks, embeddings, model cards, OpenAI's error body).
* :mod:`.routes` are the Tornado handlers that carry it, built on the HTTP bases of
  ``server/`` (auth, bounded bodies, tracing, abandoning a request whose client left), and
  calling the data plane like every other adapter.

It imports only ``server/``'s handler bases, never another protocol's adapter.
"""
