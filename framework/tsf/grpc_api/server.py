"""The two gRPC listeners, on the server's asyncio loop (``grpc.aio``).

* inference (7070): TorchServe's ``InferenceAPIsService`` and OIP's ``GRPCInferenceService``
* management (7071): TorchServe's ``ManagementAPIsService``

Messages are limited by ``max_request_size`` and ``max_response_size``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from ..config.settings import GRPC_DEFAULT_PORTS, Address, grpc_listen_address
from ..services import Services
from .oip import OipService
from .stubs import load
from .torchserve import InferenceService, ManagementService

log = logging.getLogger("tsf")


class GrpcServers:
    """Starts and stops the inference and management gRPC servers."""

    def __init__(self, services: Services) -> None:
        self.config = services.config
        self.services = services
        self.servers: list[Any] = []
        self.addresses: dict[str, Address] = {}

    async def start(self) -> dict[str, int]:
        """Listen on both addresses; returns ``{"grpc_inference": port, "grpc_management": port}``."""
        import grpc

        stubs = load()
        options = [("grpc.max_receive_message_length", self.config.max_request_size),
                   ("grpc.max_send_message_length", self.config.max_response_size)]
        inference = grpc.aio.server(options=options)
        stubs["tsf_torchserve_inference_pb2_grpc"].add_InferenceAPIsServiceServicer_to_server(
            InferenceService(self.services, stubs["tsf_torchserve_inference_pb2"]), inference)
        stubs["tsf_oip_pb2_grpc"].add_GRPCInferenceServiceServicer_to_server(
            OipService(self.services, stubs["tsf_oip_pb2"]), inference)
        management = grpc.aio.server(options=options)
        stubs["tsf_torchserve_management_pb2_grpc"].add_ManagementAPIsServiceServicer_to_server(
            ManagementService(self.services, stubs["tsf_torchserve_management_pb2"]),
            management)
        ports = {}
        for api, server, key, override in (
                ("grpc_inference", inference, "grpc_inference_address",
                 self.config.grpc_inference_port),
                ("grpc_management", management, "grpc_management_address",
                 self.config.grpc_management_port)):
            address = grpc_listen_address(getattr(self.config, key), override,
                                          GRPC_DEFAULT_PORTS[key])
            port = server.add_insecure_port(f"{address.host}:{address.port}")
            if port == 0:
                raise OSError(f"cannot listen for gRPC on {address.host}:{address.port}")
            self.addresses[api] = dataclasses.replace(address, port=port)
            await server.start()
            self.servers.append(server)
            ports[api] = port
        log.info("gRPC listening: inference %s:%d, management %s:%d",
                 self.addresses["grpc_inference"].host, ports["grpc_inference"],
                 self.addresses["grpc_management"].host, ports["grpc_management"])
        return ports

    async def stop(self, grace: float = 2.0) -> None:
        servers, self.servers = list(self.servers), []
        await asyncio.gather(*(server.stop(grace) for server in servers))
