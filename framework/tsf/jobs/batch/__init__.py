"""``tsf batch``: offline batch inference with an archive's own handler, over a folder of files,
a JSON Lines, CSV or Parquet file; in local worker processes or over Ray Data."""
