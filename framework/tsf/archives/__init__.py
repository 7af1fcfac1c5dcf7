"""Model archives: reading (``.mar``, ``.tar.gz``, folders, extracted safely), writing (``tsf
archive``), where archives come from (allow-list, download cache, ``sha256``, the built-in storage
plugin) and the class labels an archive ships.

May import: ``config``, ``errors``, ``json_body``.
"""
