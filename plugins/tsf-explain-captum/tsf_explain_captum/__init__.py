"""tsf-explain-captum: ``tsf_explain`` for image, segmentation, detection and text handlers."""
