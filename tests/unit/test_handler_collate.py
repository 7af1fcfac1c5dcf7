"""The base handler's ``collate`` and ``split`` steps, in process through HandlerHarness: an
override takes effect, OIP requests of different row counts get their own rows back, and what
one batch notes in ``context.batch_state`` never reaches another."""

from __future__ import annotations

import pytest

from tsf.context import Context
from tsf.handler import OIP_ROWS, BaseHandler
from tsf.testing import HandlerHarness, harness_request, oip_request

torch = pytest.importorskip("torch")


class Doubler(BaseHandler):
    """The base handler around a "model" that doubles its input and records each call's shape."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def tsf_load_model(self, context):
        context.input_dtype = "float32"

        def model(batch):
            self.calls.append(list(batch.shape))
            return batch * 2

        return model


class PaddingDoubler(Doubler):
    """docs/writing-handlers.md's example: pads sequences into one batch, trims results back."""

    def collate(self, context, tensors):
        context.batch_state["lengths"] = [len(t) for t in tensors]
        batch = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        return batch.to(context.device)

    def split(self, context, outputs, count):
        lengths = context.batch_state["lengths"]
        assert count == len(lengths)
        return [outputs[i, :n].tolist() for i, n in enumerate(lengths)]


def test_a_custom_collate_and_split_take_effect(tmp_path):
    handler = PaddingDoubler()
    harness = HandlerHarness(tmp_path, handler)
    answers = harness.run([[1, 2, 3], [4], [5, 6]])
    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.json() for a in answers] == [[2, 4, 6], [8], [10, 12]]
    assert handler.calls == [[3, 3]]  # one padded batch, not three samples one by one


def test_without_overrides_rows_of_different_lengths_run_one_by_one(tmp_path):
    handler = Doubler()
    answers = HandlerHarness(tmp_path, handler).run([[1, 2, 3], [4]])
    assert [a.json() for a in answers] == [[2, 4, 6], [8]]
    assert handler.calls == [[1, 3], [1, 1]]


def test_oip_requests_of_different_row_counts_share_one_batch_and_get_their_own_rows(tmp_path):
    handler = Doubler()
    harness = HandlerHarness(tmp_path, handler)
    inputs = [torch.arange(6, dtype=torch.float32).reshape(3, 2),
              torch.tensor([[10.0, 11.0]]),
              torch.tensor([[20.0, 21.0], [22.0, 23.0]])]
    answers = harness.run_oip([{"input0": x} for x in inputs])
    assert [a.status for a in answers] == [200, 200, 200]
    assert handler.calls == [[6, 2]]  # concatenated along their own batch dimension
    for answer, x in zip(answers, inputs):
        [output] = answer.tensors().values()
        assert output.dtype == torch.float32
        assert torch.equal(output, x * 2)


def test_the_rows_of_an_oip_batch_do_not_reach_the_next_batch(tmp_path):
    handler = Doubler()
    harness = HandlerHarness(tmp_path, handler)
    harness.run_oip([{"input0": torch.ones(3, 2)}, {"input0": torch.ones(1, 2)}])
    assert harness.context.batch_state[OIP_ROWS] == [3, 1]
    # the next batch, of two same-shape JSON samples, is split row by row again
    first, second = harness.run([[1.0, 2.0], [3.0, 4.0]])
    assert (first.json(), second.json()) == ([2.0, 4.0], [6.0, 8.0])
    assert OIP_ROWS not in harness.context.batch_state


def test_a_mixed_batch_of_oip_and_json_requests_runs_sample_by_sample(tmp_path):
    handler = Doubler()
    harness = HandlerHarness(tmp_path, handler)
    tensor_answer, json_answer = harness.run_requests(
        [oip_request({"input0": torch.ones(2, 2)}), harness_request([1.0, 2.0])])
    assert torch.equal(tensor_answer.tensors()["output0"], torch.full((2, 2), 2.0))
    assert json_answer.json() == [2.0, 4.0]
    assert handler.calls == [[2, 2], [1, 2]]


class StateChecker(Doubler):
    """Fails a batch whose collate finds notes left by an earlier batch."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []

    def collate(self, context, tensors):
        self.seen.append(dict(context.batch_state))
        context.batch_state["ids"] = list(context.request_ids.values())
        for tensor in tensors:
            if tensor.sum() < 0:
                raise ValueError("negative input")
        return super().collate(context, tensors)


def test_each_batch_and_each_isolation_retry_starts_with_empty_batch_state(tmp_path):
    handler = StateChecker()
    harness = HandlerHarness(tmp_path, handler)
    answers = harness.run([[1.0], [-1.0], [2.0]])
    assert [a.status for a in answers] == [200, 500, 200]
    harness.run([[3.0]])
    # the batch of three, its three retries one by one, then the next batch
    assert handler.seen == [{}] * 5


def test_two_batches_in_flight_on_one_handler_instance_keep_their_own_rows():
    handler = Doubler()
    oip_ctx, json_ctx = contexts = [
        Context(model_name="m", model_version="1", model_dir=".", manifest={}, device="cpu")
        for _ in range(2)]
    oip_ctx.begin_batch(["a", "b"], [{}, {}], protocols=["oip", "oip"])
    json_ctx.begin_batch(["c", "d"], [{}, {}])
    for ctx in contexts:
        ctx.model = handler.tsf_load_model(ctx)
    oip_batch = handler.tsf_preprocess(oip_ctx, [{"x": torch.ones(2, 1)},
                                                 {"x": torch.zeros(1, 1)}])
    # a second batch is prepared before the first one is split
    json_batch = handler.tsf_preprocess(json_ctx, [{"data": [1.0]}, {"data": [2.0]}])
    oip_results = handler.tsf_postprocess(oip_ctx, handler.forward(oip_ctx, oip_batch))
    json_results = handler.tsf_postprocess(json_ctx, handler.forward(json_ctx, json_batch))
    assert [r.tolist() for r in oip_results] == [[[2.0], [2.0]], [[0.0]]]
    assert json_results == [[2.0], [4.0]]
