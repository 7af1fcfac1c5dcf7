"""tsf-storage-s3: ``tsf_fetch_archive`` for ``s3://bucket/key`` model URLs."""
