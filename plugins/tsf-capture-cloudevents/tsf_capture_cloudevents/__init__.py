"""tsf capture sink: CloudEvents over HTTP in KServe's payload-logger format."""
