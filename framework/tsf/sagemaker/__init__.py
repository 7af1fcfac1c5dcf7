"""Amazon SageMaker's container contract for tsf (``tsf serve --sagemaker``).

The front-end half (settings from ``SAGEMAKER_*`` variables, the model found in
``/opt/ml/model``, the ``/ping``, ``/invocations`` and multi-model routes) never imports torch; the
worker half (:mod:`tsf.sagemaker.handler`, the built-in ``sagemaker`` handler) serves a user's
``inference.py`` the way SageMaker's PyTorch inference toolkit does.
"""
