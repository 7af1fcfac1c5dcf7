"""SageMaker inference toolkit's ``sagemaker_inference`` API, implemented for tsf
(distribution ``tsf-sagemaker-compat``).

``inference.py`` scripts written for SageMaker's toolkit import ``content_types``, ``decoder``,
``encoder``, ``errors`` and ``utils`` from here unchanged, and run in tsf's SageMaker mode (the
built-in ``sagemaker`` handler).  The toolkit's model-server launcher (``model_server``,
``default_handler_service``, ``transformer``) is not provided: tsf serves the model itself.
"""

__version__ = "1.10.1"
TSF_COMPAT = True
