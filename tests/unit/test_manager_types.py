"""The manager's typed register request and its one result type."""

from __future__ import annotations

from tsf.serving.manager_types import ManagerResult, RegisterRequest


def test_a_result_answers_a_status_message_or_its_document():
    assert ManagerResult(202, "Processing worker updates...").body() == {
        "status": "Processing worker updates..."}
    split = {"modelName": "m", "weights": None}
    assert ManagerResult(document=split).body() is split
    assert ManagerResult(document=split).code == 200


def test_register_settings_use_the_model_settings_names():
    request = RegisterRequest("m.mar", batch_size=4, initial_workers=2)
    assert request.settings() == {"batch_size": 4, "max_batch_delay": None, "min_workers": 2,
                                  "max_workers": None, "response_timeout": None,
                                  "startup_timeout": None}
    assert request.synchronous and not request.replace
