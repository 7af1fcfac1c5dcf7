"""Credentials never reach a log line or a span: request targets and URLs are redacted."""

from __future__ import annotations

import pytest

from tsf.telemetry.redaction import REDACTED, SECRET_QUERY_KEYS, redact_target, redact_url


@pytest.mark.parametrize("target", [
    "/predictions/mlp", "/ping", "/models?limit=10&next_page_token=3",
    "/predictions/m?a=1&b=&c", "/v2/models/m/versions/1.0/infer", "*", "",
])
def test_targets_without_credentials_are_left_as_they_are(target):
    assert redact_target(target) == target


@pytest.mark.parametrize("target, expected", [
    ("/ping?token=s3cret", "/ping?token=REDACTED"),
    ("/p?x=1&access_token=s3cret&y=2", "/p?x=1&access_token=REDACTED&y=2"),
    ("/p?ACCESS_TOKEN=s3cret", "/p?ACCESS_TOKEN=REDACTED"),
    ("/p?api%5Fkey=s3cret", "/p?api%5Fkey=REDACTED"),  # the key percent-encoded
    ("/p?token=a&token=b", "/p?token=REDACTED&token=REDACTED"),
    ("/p?X-Amz-Signature=s3cret&X-Amz-Credential=AKIA", 
     "/p?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED"),
    ("/p?sig=s3cret;token=x", "/p?sig=REDACTED"),  # only & separates pairs
    ("/p?token=", "/p?token="),  # nothing to hide
])
def test_secret_query_values_are_redacted(target, expected):
    assert redact_target(target) == expected


def test_a_url_given_as_a_parameter_loses_its_credentials():
    # a presigned S3 URL or one with a password, passed to the register API as ``url``
    target = ("/models?url=https%3A%2F%2Falice%3As3cret%40models.example.com%2Fm.mar"
              "%3FX-Amz-Signature%3Ds3cret%26v%3D1&model_name=m")
    redacted = redact_target(target)
    assert "s3cret" not in redacted and "alice" not in redacted, redacted
    assert "models.example.com" in redacted and "model_name=m" in redacted
    assert "v%3D1" in redacted or "v=1" in redacted


@pytest.mark.parametrize("url, expected", [
    ("https://alice:s3cret@host/m.mar", "https://REDACTED:REDACTED@host/m.mar"),
    ("https://ghp_s3cret@host/m.mar", "https://REDACTED@host/m.mar"),
    ("https://host/m.mar?token=s3cret", "https://host/m.mar?token=REDACTED"),
    ("https://host:8443/m.mar", "https://host:8443/m.mar"),
    ("s3://bucket/m.mar", "s3://bucket/m.mar"),
    ("m.mar", "m.mar"),
])
def test_urls_lose_their_userinfo_and_secret_parameters(url, expected):
    assert redact_url(url) == expected


def test_an_absolute_form_request_target_is_redacted_too():
    assert redact_target("http://alice:s3cret@host/ping?token=t") == \
        "http://REDACTED:REDACTED@host/ping?token=REDACTED"


def test_the_documented_keys_are_the_redacted_ones():
    from pathlib import Path

    security = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    for key in SECRET_QUERY_KEYS:
        assert f"`{key}`" in security, key
    assert REDACTED == "REDACTED"


def test_download_log_lines_show_where_an_archive_is_not_how_to_get_it():
    from tsf.archives.storage import loggable_url

    assert loggable_url("https://alice:s3cret@host:8443/m/x.mar?X-Amz-Signature=s3cret") == \
        "https://host:8443/m/x.mar?..."
    assert loggable_url("http://host/x.mar") == "http://host/x.mar"
