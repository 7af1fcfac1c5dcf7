"""tsf-contrib-statsd: an example ``tsf_record_metric`` exporter speaking StatsD over UDP."""
