"""Command line: ``tsf serve``, ``tsf archive``, ``tsf workflow-archive``, ``tsf check-archive``,
``tsf batch``, ``tsf plugins`` and ``tsf monitor``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any, Callable

from .errors import BadRequest, TsfError
from .monitoring import commands as monitor_commands

EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the model server in the foreground")
    p.add_argument("--model-store", help="folder of model archives")
    p.add_argument("--workflow-store", help="folder of workflow archives (.war); default: the "
                   "model store")
    p.add_argument("--models", nargs="*", help="models to load at start: all, x.mar, name=x.mar")
    p.add_argument("--workflows", nargs="*",
                   help="workflows to register at start: all, x.war, name=x.war")
    p.add_argument("--ts-config", "--config", dest="config_file",
                   help="config.properties file (TorchServe keys)")
    p.add_argument("--inference-address")
    p.add_argument("--management-address")
    p.add_argument("--metrics-address")
    p.add_argument("--workspace", help="folder for unpacked archives (default: a temp folder)")
    p.add_argument("--ready-file", help="write the bound ports here as JSON once serving")
    p.add_argument("--log-level", default=None)
    p.add_argument("--auth-token-file", default=None,
                   help="require 'Authorization: Bearer <token>' on the inference and "
                        "management APIs (TorchServe key_file.json, a mapping, or one token)")
    p.add_argument("--log-format", default=None, choices=["text", "json"],
                   help="server log lines as text (default) or JSON objects")
    p.add_argument("--foreground", action="store_true", help="accepted for TorchServe "
                   "compatibility; tsf serve always runs in the foreground")
    p.add_argument("--sagemaker", action="store_true", default=None,
                   help="serve the SageMaker container contract (/ping, /invocations, "
                        "SAGEMAKER_* variables); see docs/sagemaker.md")
    p.add_argument("container_command", nargs="?", choices=["serve"],
                   help="SageMaker starts containers as `docker run IMAGE serve`: a trailing "
                        "'serve' after an entry point of `tsf serve ...` means --sagemaker")
    llm = p.add_argument_group("generative models (OpenAI-compatible routes on /v1)")
    llm.add_argument("--llm", metavar="MODEL_DIR", help="serve a Hugging Face model folder "
                     "(config.json, weights, tokenizer) with a generation engine, no archive")
    llm.add_argument("--llm-name", help="the model's name (default: the folder's name)")
    llm.add_argument("--llm-engine", choices=("transformers", "vllm"),
                     help="the engine that serves it (default: transformers)")
    ts = p.add_argument_group("TorchServe command-line compatibility (torchserve --start ...)")
    ts.add_argument("--start", action="store_true",
                    help="accepted: tsf serve starts the server (in the foreground)")
    ts.add_argument("--ncs", "--no-config-snapshots", dest="ncs", action="store_true",
                    help="neither write config snapshots nor restore the latest one at start")
    ts.add_argument("--disable-token-auth", action="store_true",
                    help="no token on the APIs even if the config names an auth_token_file")
    ts.add_argument("--enable-model-api", action="store_true", default=None,
                    help="allow registering and unregistering models (the tsf default)")
    ts.add_argument("--log-config", help="accepted and ignored: tsf logs with --log-level and "
                    "--log-format instead of log4j")


def _archive_parser(sub: Any) -> None:
    p = sub.add_parser("archive", help="create a model archive (torch-model-archiver flags)")
    p.add_argument("--model-name", required=True)
    p.add_argument("--version", default="1.0")
    p.add_argument("--serialized-file")
    p.add_argument("--model-file")
    p.add_argument("--handler", default="")
    p.add_argument("--extra-files")
    p.add_argument("--export-path", default=".")
    p.add_argument("--archive-format", default="default",
                   choices=("default", "tgz", "no-archive", "zip-store"))
    p.add_argument("--requirements-file", "-r")
    p.add_argument("--config-file", "-c")
    p.add_argument("--runtime", default="python")
    p.add_argument("-f", "--force", action="store_true")


def _workflow_archive_parser(sub: Any) -> None:
    p = sub.add_parser("workflow-archive",
                       help="create a workflow archive (torch-workflow-archiver flags)")
    p.add_argument("--workflow-name", required=True)
    p.add_argument("--spec-file", required=True, help="the workflow's YAML specification")
    p.add_argument("--handler", required=True, help="the .py file with the DAG's functions")
    p.add_argument("--export-path", default=".")
    p.add_argument("--extra-files", help="comma-separated files or folders to include")
    p.add_argument("-f", "--force", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsf", description="tsf model server")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _archive_parser(sub)
    _workflow_archive_parser(sub)
    plugins = sub.add_parser("plugins", help="list installed plugins and their hooks")
    plugins.add_argument("--json", action="store_true")
    check = sub.add_parser("check-archive", help="load an archive's handler in a worker, run "
                           "one request if given, and report what is missing")
    check.add_argument("archive", help=".mar, .tar.gz, .zip or an unpacked folder")
    check.add_argument("--data", help="a file whose bytes are sent as one request")
    check.add_argument("--content-type", default="application/octet-stream",
                       help="content type of --data (application/json, text/plain, ...)")
    check.add_argument("--timeout", type=float, default=120.0,
                       help="seconds allowed for loading and for the request")
    check.add_argument("--json", action="store_true")
    monitor_commands.add_parser(sub)
    from .jobs.batch.command import add_parser as add_batch_parser

    add_batch_parser(sub)
    _optimize_parser(sub)
    return parser


def _optimize_parser(sub: Any) -> None:
    p = sub.add_parser("optimize", help="make an archive serve a faster form of its model "
                       "(torch.export, AOTInductor, int8) and show what changed")
    p.add_argument("archive", help=".mar, .tar.gz, .zip or an unpacked folder")
    p.add_argument("-o", "--output", required=True, help="the archive to write (.mar)")
    p.add_argument("--export", action="store_true", help="a torch.export program (.pt2)")
    p.add_argument("--aot", action="store_true", help="an AOTInductor package (.pt2)")
    p.add_argument("--quantize", choices=["int8"], help="PT2E static int8 (CPU, torchao)")
    p.add_argument("--sample-input", nargs="+", default=[], metavar="FILE",
                   help="inputs as clients send them: export example, int8 calibration, "
                   "accuracy and timing")
    p.add_argument("--input-shape", help="one sample's shape (3,224,224): random inputs "
                   "instead of --sample-input")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch the compiled "
                   "model takes in one call (larger ones run in slices; default 8)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per timing run")
    p.add_argument("-f", "--force", action="store_true", help="overwrite the output")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop that ``event_loop`` names: uvloop's when installed (``auto``) or asked for,
    else asyncio's."""
    if choice not in EVENT_LOOPS:
        raise BadRequest(f"invalid value for event_loop: {choice!r} "
                         f"(one of {', '.join(EVENT_LOOPS)})")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise BadRequest("event_loop=uvloop but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_serve(args: argparse.Namespace) -> int:
    from .app import TsfServer, serve_forever
    from .config.models_key import parse_models
    from .config.settings import load_config
    from .memory import release_large_buffers
    from .serving.snapshot import parse_snapshot
    from .telemetry.logs import configure_logging

    cli = {"model_store": args.model_store, "workflow_store": args.workflow_store,
           "inference_address": args.inference_address,
           "management_address": args.management_address,
           "metrics_address": args.metrics_address, "workspace": args.workspace,
           "log_level": args.log_level, "log_format": args.log_format,
           "auth_token_file": args.auth_token_file,
           "load_models": ",".join(args.models) if args.models else None,
           "enable_model_api": args.enable_model_api,
           "sagemaker": args.sagemaker or args.container_command == "serve" or None,
           "load_workflows": ",".join(args.workflows) if args.workflows else None,
           "llm_model_dir": args.llm, "llm_name": args.llm_name,
           "llm_engine": args.llm_engine}
    if args.disable_token_auth:
        cli.update(auth_token_file="", inference_token="", management_token="")
    # TorchServe reads TS_CONFIG_FILE when --ts-config is not given
    config_file = args.config_file or os.environ.get("TS_CONFIG_FILE")
    cli["ts_config_file"] = os.path.abspath(config_file) if config_file else None
    if args.ncs:
        cli["no_config_snapshots"] = True
    config = load_config(config_file, cli)
    parse_snapshot(config.model_snapshot)  # a bad snapshot stops the start with its reason
    parse_models(config.models)  # so does a bad models key
    if config.llm_model_dir:
        from .serving.llm_folder import llm_archive

        llm_archive(config)  # a folder that is not a model stops the start with its reason
    if config.workflow_store and not os.path.isdir(config.workflow_store):
        raise BadRequest(f"workflow_store {config.workflow_store} is not a folder")
    configure_logging(config.log_level, config.log_format)
    if args.log_config:
        logging.getLogger("tsf").warning("--log-config %s ignored: tsf logs with --log-level "
                                         "and --log-format", args.log_config)
    release_large_buffers()

    async def main() -> None:
        stop = asyncio.Event()
        server = TsfServer(config)

        def on_signal(sig: signal.Signals) -> None:
            if not stop.is_set():  # the first SIGTERM/SIGINT drains
                stop.set()
                return
            logging.getLogger("tsf").warning("second %s: stopping at once", sig.name)
            server.manager.kill_workers()
            logging.shutdown()
            os._exit(1)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        await serve_forever(server, args.ready_file, stop)

    with asyncio.Runner(loop_factory=event_loop_factory(config.event_loop)) as runner:
        uses_uvloop = type(runner.get_loop()).__module__.startswith("uvloop")
        logging.getLogger("tsf").info("event loop: %s", "uvloop" if uses_uvloop else "asyncio")
        runner.run(main())
    return 0


def run_archive(args: argparse.Namespace) -> int:
    from .archives.writer import ArchiveSpec, write_archive

    spec = ArchiveSpec(model_name=args.model_name, version=args.version, handler=args.handler,
                       serialized_file=args.serialized_file, model_file=args.model_file,
                       extra_files=args.extra_files, requirements_file=args.requirements_file,
                       config_file=args.config_file, export_path=args.export_path,
                       archive_format=args.archive_format, force=args.force,
                       runtime=args.runtime)
    print(write_archive(spec))
    return 0


def run_workflow_archive(args: argparse.Namespace) -> int:
    from .workflows.war import WarSpec, write_war

    print(write_war(WarSpec(workflow_name=args.workflow_name, spec_file=args.spec_file,
                            handler=args.handler, export_path=args.export_path,
                            extra_files=args.extra_files, force=args.force)))
    return 0


def run_plugins(args: argparse.Namespace) -> int:
    from .plugins import (FRONTEND_BUILTINS, WORKER_BUILTINS, create_manager, describe_plugins,
                          handler_names)

    pm = create_manager(FRONTEND_BUILTINS + WORKER_BUILTINS)
    plugins = describe_plugins(pm)
    handlers = sorted(handler_names(pm))
    if args.json:
        print(json.dumps({"plugins": plugins, "handlers": handlers}, indent=2))
        return 0
    for plugin in plugins:
        print(f"{plugin['name']:<32} {plugin['version']:<10} {', '.join(plugin['hooks'])}")
    print(f"handlers: {', '.join(handlers)}")
    return 0


def run_check_archive(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .workers.archive_check import format_report, passed, run_check

    data = Path(args.data).read_bytes() if args.data else None
    report = run_check(args.archive, data, args.content_type, args.timeout)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if passed(report) else 1


def run_batch(args: argparse.Namespace) -> int:
    from .jobs.batch.command import run

    return run(args)


def run_optimize(args: argparse.Namespace) -> int:
    from pathlib import Path

    import os

    from .errors import BadRequest
    from .workers.process import WORKER_SPIN_COUNT

    # measure the model as a worker runs it: OpenMP's idle threads spin briefly (read when
    # torch loads libgomp, so before the import below brings torch in)
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", WORKER_SPIN_COUNT)
    from .optimize.command import OptimizeRequest, optimize

    try:
        shape = [int(n) for n in args.input_shape.split(",")] if args.input_shape else None
    except ValueError:
        raise BadRequest("--input-shape takes comma-separated sizes: 3,224,224") from None
    request = OptimizeRequest(
        Path(args.archive), Path(args.output), export=args.export, aot=args.aot,
        quantize=args.quantize, samples=[Path(p) for p in args.sample_input],
        input_shape=shape, max_batch=args.max_batch, device=args.device, rounds=args.rounds,
        seconds=args.seconds, force=args.force)
    report = optimize(request, say=(lambda text: None) if args.json else print)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runners = {"serve": run_serve, "archive": run_archive, "plugins": run_plugins,
               "check-archive": run_check_archive, "workflow-archive": run_workflow_archive,
               "monitor": monitor_commands.run, "batch": run_batch, "optimize": run_optimize}
    try:
        return runners[args.command](args)
    except TsfError as exc:
        print(f"tsf {args.command}: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
