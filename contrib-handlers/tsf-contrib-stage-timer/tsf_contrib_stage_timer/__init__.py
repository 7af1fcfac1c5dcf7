"""tsf-contrib-stage-timer: an example cross-cutting tsf plugin."""
