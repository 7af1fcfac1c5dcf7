"""tsf monitoring report: an HTML page of drift, quality and per-group metrics (Evidently)."""
