"""TorchServe's config.properties keys: refused ones stop the server, the rest are documented."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pytest

from tsf.config.model_options import UNSUPPORTED
from tsf.config.settings import _YAML_KEYS, ServerConfig, load_config
from tsf.config.torchserve_keys import NOT_APPLICABLE, REFUSED
from tsf.errors import BadRequest

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _properties(tmp_path, text: str) -> str:
    path = tmp_path / "config.properties"
    path.write_text(text)
    return str(path)


def test_refused_keys_stop_the_server_and_harmless_values_pass(tmp_path, caplog):
    with pytest.raises(BadRequest, match="blacklist_env_vars is not supported by tsf"):
        load_config(_properties(tmp_path, "blacklist_env_vars=.*SECRET.*\n"))
    with pytest.raises(BadRequest, match="metrics_mode"):
        load_config(_properties(tmp_path, "metrics_mode=log\n"))
    with caplog.at_level(logging.WARNING, logger="tsf.config"):
        config = load_config(_properties(
            tmp_path, "metrics_mode=prometheus\nvmargs=-Xmx1g\nno_such_key=1\njob_queue_size=7\n"))
    assert config.job_queue_size == 7
    assert "vmargs is ignored: there is no JVM" in caplog.text
    assert "no_such_key is unknown" in caplog.text


def test_no_supported_key_is_listed_as_refused_or_not_applicable():
    supported = {f.name for f in dataclasses.fields(ServerConfig)}
    assert not supported & set(REFUSED), sorted(supported & set(REFUSED))
    assert not supported & set(NOT_APPLICABLE), sorted(supported & set(NOT_APPLICABLE))


def test_every_key_is_documented_in_configuration_md():
    text = DOC.read_text()
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text))
    server_keys = {f.name for f in dataclasses.fields(ServerConfig)} - {
        "inference_token", "management_token"}
    model_keys = set(_YAML_KEYS) | set(UNSUPPORTED) | {
        "deviceType", "deviceIds", "clientTimeoutInMills", "useJobTicket",
        "maxRetryTimeoutInSec", "jobQueueSize"}
    missing = (server_keys | set(REFUSED) | set(NOT_APPLICABLE) | model_keys) - documented
    assert not missing, f"not in docs/configuration.md: {sorted(missing)}"


def _table(heading: str) -> list[tuple[list[str], str]]:
    """The rows of the first table after ``heading`` in configuration.md: (the keys of its
    first cell, its second cell).  Values in parentheses, ``(`true`)``, are not keys."""
    section = DOC.read_text().split(heading, 1)[1]
    lines = section[section.index("\n|"):].strip().splitlines()
    rows = []
    for line in lines[2:]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        keys = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", re.sub(r"\([^)]*\)", "", cells[0]))
        rows.append((keys, cells[1]))
    return rows


def test_the_settings_table_lists_only_settings_tsf_reads():
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    keys = {key for row_keys, _ in _table("# Configuration") for key in row_keys}
    assert keys, "the settings table was not found"
    assert not keys - fields, f"in the settings table, not ServerConfig fields: {keys - fields}"
    undocumented = fields - keys
    assert not undocumented, f"ServerConfig fields missing from the table: {undocumented}"


def test_the_torchserve_keys_table_says_what_the_code_does():
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    status_of: dict[str, str] = {}
    wrong = []
    for keys, status in _table("## TorchServe's config.properties keys"):
        kind = ("supported" if status == "supported" else "refused" if status.startswith(
            "refused") else "not applicable" if status == "not applicable" else status)
        for key in keys:
            status_of[key] = kind
            expected = {"supported": key in fields, "refused": key in REFUSED,
                        "not applicable": key in NOT_APPLICABLE}.get(kind)
            if not expected:
                wrong.append(f"{key} is documented {status!r}")
    assert not wrong, wrong
    for key in REFUSED:
        assert status_of.get(key) == "refused", f"{key} is refused but documented " \
                                                f"{status_of.get(key)!r}"
    for key in NOT_APPLICABLE:
        assert status_of.get(key) == "not applicable", f"{key} is not applicable but " \
                                                       f"documented {status_of.get(key)!r}"
