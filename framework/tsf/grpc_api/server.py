"""The two gRPC listeners, on the server's asyncio loop (``grpc.aio``).

* inference (7070): TorchServe's ``InferenceAPIsService`` and OIP's ``GRPCInferenceService``
* management (7071): TorchServe's ``ManagementAPIsService``

Messages are limited by ``max_request_size`` and ``max_response_size``.  With
``enable_grpc_ssl`` both listen with TLS, with the key material of the HTTPS listeners
(:mod:`tsf.config.tls`).
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

    def __init__(self, services: Services, key_material: Any = None) -> None:
        self.config = services.config
        self.key_material = key_material  # tsf.config.tls.KeyMaterial when TLS is on
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
        credentials = None
        if self.config.enable_grpc_ssl:
            material = self.key_material
            credentials = grpc.ssl_server_credentials([(material.key_pem, material.chain_pem)])
        ports = {}
        for api, server, key, override in (
                ("grpc_inference", inference, "grpc_inference_address",
                 self.config.grpc_inference_port),
                ("grpc_management", management, "grpc_management_address",
                 self.config.grpc_management_port)):
            address = grpc_listen_address(getattr(self.config, key), override,
                                          GRPC_DEFAULT_PORTS[key])
            target = f"{address.host}:{address.port}"
            port = server.add_secure_port(target, credentials) if credentials is not None \
                else server.add_insecure_port(target)
            if port == 0:
                raise OSError(f"cannot listen for gRPC on {address.host}:{address.port}")
            self.addresses[api] = dataclasses.replace(address, port=port)
            await server.start()
            self.servers.append(server)
            ports[api] = port
        log.info("gRPC listening%s: inference %s:%d, management %s:%d",
                 " with TLS" if credentials is not None else "",
                 self.addresses["grpc_inference"].host, ports["grpc_inference"],
                 self.addresses["grpc_management"].host, ports["grpc_management"])
        return ports

    async def stop(self, grace: float = 2.0) -> None:
        servers, self.servers = list(self.servers), []
        await asyncio.gather(*(server.stop(grace) for server in servers))
