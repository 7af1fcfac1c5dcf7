"""tsf-handler-text: the ``text_classifier`` handler."""
