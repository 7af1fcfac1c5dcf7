"""tsf-handler-segmenter: the ``image_segmenter`` handler."""
