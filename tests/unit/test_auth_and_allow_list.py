"""Bearer tokens per API and the remote-URL allow-list, as pure logic."""

from __future__ import annotations

import json

import pytest

from tsf.archives.sources import check_allowed
from tsf.auth import load_tokens
from tsf.config.settings import ServerConfig
from tsf.errors import Forbidden, TsfError, Unauthorized


def test_no_token_configured_leaves_every_api_open():
    tokens = load_tokens(ServerConfig())
    assert not tokens.enabled
    tokens.check("inference", None)
    tokens.check("management", "Bearer anything")


def test_each_api_takes_only_its_own_key(tmp_path):
    key_file = tmp_path / "key_file.json"  # TorchServe's format
    key_file.write_text(json.dumps({"management": {"key": "m-key", "expiration time": "x"},
                                    "inference": {"key": "i-key", "expiration time": "x"}}))
    tokens = load_tokens(ServerConfig(auth_token_file=str(key_file)))
    tokens.check("inference", "Bearer i-key")
    tokens.check("management", "bearer m-key")
    with pytest.raises(Unauthorized) as wrong:
        tokens.check("inference", "Bearer m-key")
    assert "invalid token" in wrong.value.message
    assert 'error="invalid_token"' in wrong.value.headers["WWW-Authenticate"]
    for header in (None, "", "Basic i-key", "Bearer ", "i-key"):
        with pytest.raises(Unauthorized):
            tokens.check("inference", header)
    tokens.check("metrics", None)  # metrics are never behind a token


def test_one_token_file_serves_both_apis_and_settings_override_it(tmp_path):
    key_file = tmp_path / "token"
    key_file.write_text("s3cret\n")
    tokens = load_tokens(ServerConfig(auth_token_file=str(key_file), management_token="other"))
    tokens.check("inference", "Bearer s3cret")
    tokens.check("management", "Bearer other")
    with pytest.raises(Unauthorized):
        tokens.check("management", "Bearer s3cret")


def test_unreadable_or_empty_token_files_are_refused(tmp_path):
    with pytest.raises(TsfError, match="cannot read"):
        load_tokens(ServerConfig(auth_token_file=str(tmp_path / "missing")))
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(TsfError, match="holds no token"):
        load_tokens(ServerConfig(auth_token_file=str(empty)))


def test_only_the_model_store_is_reachable_by_default(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    config = ServerConfig(model_store=str(store))
    check_allowed("mnist.mar", config)  # a plain name: looked up in the store
    check_allowed(f"file://{store}/mnist.mar", config)
    for url in (f"file://{tmp_path}/other.mar", "file:///etc/passwd",
                "https://example.com/m.mar", "http://169.254.169.254/latest/meta-data",
                f"file://{store}/../other.mar", "s3://bucket/m.mar"):
        with pytest.raises(Forbidden):
            check_allowed(url, config)


def test_allowed_urls_must_match_in_full():
    config = ServerConfig(allowed_urls=r"https://models\.example\.com/.*, s3://bucket/.*")
    check_allowed("https://models.example.com/a.mar", config)
    check_allowed("s3://bucket/x/y.mar", config)
    for url in ("https://models.example.com.evil.net/a.mar", "http://models.example.com/a.mar",
                "s3://bucket2/x.mar"):
        with pytest.raises(Forbidden):
            check_allowed(url, config)
