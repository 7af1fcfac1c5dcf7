"""gRPC APIs: TorchServe's inference and management services and the OIP inference service.

Off unless ``enable_grpc`` is set; needs ``pip install 'tsf-framework[grpc]'``.  Nothing here is
imported until then.

May import: the data plane and everything below it; never ``server`` or the composition root.
"""
