"""Metrics of generative models (served by an engine), on the server's registry.

* ``tsf_llm_time_to_first_token_seconds``: from a request's arrival to its first token (its
  queue wait in the front end plus the engine's time to its first token);
* ``tsf_llm_inter_token_latency_seconds``: between the tokens of one choice;
* ``tsf_llm_prompt_tokens_total``, ``tsf_llm_completion_tokens_total``;
* ``tsf_llm_sequences_finished_total{finish_reason}``: each choice's ``stop`` or ``length``; a
  request whose client left counts once as ``cancelled``, one that failed as ``error``;
* ``tsf_llm_sequences_running`` and ``tsf_llm_sequences_waiting``: requests the workers hold and
  requests queued in the front end, now;
* ``tsf_llm_kv_cache_usage_ratio``: the share of the workers' KV cache in use;
* ``tsf_llm_decode_step_sequences``: how many sequences each decode step carried (continuous
  batching at work: above 1 whenever requests overlap).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MODEL_LABELS = ("model_name", "model_version")
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2,
                         0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
STEP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class GenerationMetrics:
    """The metric families above."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r, labels = registry, MODEL_LABELS
        self.ttft = Histogram("tsf_llm_time_to_first_token_seconds",
                              "Time from a request's arrival to its first generated token",
                              labels, registry=r, buckets=TOKEN_LATENCY_BUCKETS)
        self.itl = Histogram("tsf_llm_inter_token_latency_seconds",
                             "Time between two generated tokens of one choice", labels,
                             registry=r, buckets=TOKEN_LATENCY_BUCKETS)
        self.prompt_tokens = Counter("tsf_llm_prompt_tokens", "Prompt tokens processed",
                                     labels, registry=r)
        self.completion_tokens = Counter("tsf_llm_completion_tokens", "Tokens generated",
                                         labels, registry=r)
        self.finished = Counter("tsf_llm_sequences_finished", "Generated choices by how they "
                                "ended (stop, length); a request cancelled or failed counts "
                                "once (cancelled, error)",
                                labels + ("finish_reason",), registry=r)
        self.running = Gauge("tsf_llm_sequences_running", "Requests the engine workers hold "
                             "(computing, or about to begin)", labels, registry=r)
        self.waiting = Gauge("tsf_llm_sequences_waiting", "Requests queued for an engine "
                             "worker with room", labels, registry=r)
        self.cache_usage = Gauge("tsf_llm_kv_cache_usage_ratio", "Share of the engine "
                                 "workers' KV cache in use", labels, registry=r)
        self.step_sequences = Histogram("tsf_llm_decode_step_sequences", "Sequences carried "
                                        "by each decode step", labels, registry=r,
                                        buckets=STEP_BUCKETS)
