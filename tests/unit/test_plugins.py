"""Plugin manager behaviour: undecorated overrides, blocking, handler registry, no torch."""

from __future__ import annotations

import subprocess
import sys

from tsf import hookimpl
from tsf.plugins import create_manager, describe_plugins, handler_names
from tsf.runtime.handler_resolver import missing_handler_message


class Base:
    @hookimpl
    def tsf_preprocess(self, context, requests):
        return "base"


class Child(Base):
    def tsf_preprocess(self, context, requests):  # no decorator: still a hookimpl
        return "child"


def test_undecorated_override_is_a_hookimpl():
    pm = create_manager((), load_entry_points=False)
    pm.register(Child())
    assert pm.hook.tsf_preprocess(context=None, requests=[]) == "child"


def test_disable_plugins_env(monkeypatch):
    monkeypatch.setenv("TSF_DISABLE_PLUGINS", "tsf.storage")
    pm = create_manager()
    assert not pm.has_plugin("tsf.storage")
    monkeypatch.delenv("TSF_DISABLE_PLUGINS")
    assert create_manager().has_plugin("tsf.storage")


def test_builtin_handler_registry_and_listing():
    pm = create_manager(("tsf.storage", "tsf.handler"))
    assert "base" in handler_names(pm)
    names = {p["name"]: p for p in describe_plugins(pm)}
    assert "tsf_register_handlers" in names["tsf.handler"]["hooks"]
    assert names["tsf.storage"]["version"]


def test_missing_default_handler_names_its_plugin():
    assert "pip install tsf-handler-image" in missing_handler_message("image_classifier")


def test_front_end_never_imports_torch():
    code = ("import sys, asyncio\n"
            "from tsf.app import TsfServer\n"
            "from tsf.config.settings import ServerConfig\n"
            "import tsf.cli, tsf.serving.manager, tsf.archives.writer\n"
            "async def main():\n"
            "    s = TsfServer(ServerConfig(inference_address='127.0.0.1:0',"
            " management_address='127.0.0.1:0', metrics_address='127.0.0.1:0',"
            " enable_grpc=True, grpc_inference_address='127.0.0.1:0',"
            " grpc_management_address='127.0.0.1:0'))\n"
            "    await s.start(); await s.stop()\n"
            "asyncio.run(main())\n"
            "import tsf.oip.requests, tsf.server.kserve_v2\n"
            "assert 'torch' not in sys.modules, 'front end imported torch'\n"
            "assert 'numpy' not in sys.modules, 'front end imported numpy'\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_tsf_plugins_cli_lists_hooks():
    result = subprocess.run([sys.executable, "-m", "tsf.cli", "plugins", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    import json

    listing = json.loads(result.stdout)
    assert "base" in listing["handlers"]
    assert any(p["name"] == "tsf.storage" for p in listing["plugins"])


def test_labels_follow_torchserve_rules(tmp_path):
    import json

    from tsf.archives.labels import Labels

    assert Labels.from_model_dir(tmp_path)(3) == "3"
    (tmp_path / "index_to_name.json").write_text(json.dumps(
        {"0": ["n01440764", "tench"], "1": "goldfish"}))
    labels = Labels.from_model_dir(tmp_path)
    assert (labels(0), labels(1), labels(7)) == ("tench", "goldfish", "7")
