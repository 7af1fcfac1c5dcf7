"""Amazon SageMaker's container contract for tsf (``tsf serve --sagemaker``).

The front-end half (the model found in ``/opt/ml/model``, the ``/ping``, ``/invocations`` and
multi-model routes) never imports torch; the worker half (:mod:`tsf.sagemaker.handler`, the
built-in ``sagemaker`` handler) serves a user's ``inference.py`` the way SageMaker's PyTorch
inference toolkit does.  Its settings from ``SAGEMAKER_*`` variables are read by
:mod:`tsf.config.sagemaker`.

May import: ``server`` (its routes are HTTP handlers) and everything below it.
"""
