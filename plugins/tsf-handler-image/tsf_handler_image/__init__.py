"""tsf-handler-image: the ``image_classifier`` handler and the vision base other handlers use."""
