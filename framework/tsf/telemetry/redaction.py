"""Credentials taken out of request targets and URLs before they are logged or traced.

A client may put a token in the query string (``?token=...``, ``?access_token=...``), a
presigned URL carries its signature as a parameter, and a URL may hold a user and password
(``https://alice:secret@host/``).  :func:`redact_target` and :func:`redact_url` replace the
values of the query keys in :data:`SECRET_QUERY_KEYS` and any userinfo with ``REDACTED``, as
OpenTelemetry's conventions do for ``url.full`` and ``url.query``; a URL given as a parameter
(the register API's ``url``) is redacted the same way.  Everything else is left byte for byte,
so a log line still shows what was asked.  Header values are never logged.
"""

from __future__ import annotations

from urllib.parse import quote, unquote_plus

REDACTED = "REDACTED"

# query keys whose values are credentials, compared without regard to case
SECRET_QUERY_KEYS = frozenset({
    "token", "access_token", "refresh_token", "id_token", "auth_token", "api_token", "jwt",
    "api_key", "apikey", "api-key", "key", "password", "passwd", "secret", "client_secret",
    "auth", "authorization", "signature", "sig", "x-amz-signature", "x-amz-credential",
    "x-amz-security-token", "awsaccesskeyid", "x-goog-signature", "x-goog-credential",
})


def redact_target(target: str) -> str:
    """An HTTP request target (``/path?query``, or an absolute URL) without credentials."""
    if "?" not in target and "@" not in target:
        return target  # the common case costs two scans
    if "://" in target.partition("?")[0]:
        return redact_url(target)
    path, sep, query = target.partition("?")
    return path + sep + redact_query(query) if sep else path


def redact_url(url: str) -> str:
    """``url`` with its userinfo and the values of secret query keys replaced by REDACTED."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return redact_target(url) if "?" in url else url
    authority_end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#"))
                         if i >= 0), default=len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        redacted = f"{REDACTED}:{REDACTED}" if ":" in userinfo else REDACTED
        authority = f"{redacted}@{host}"
    path, qsep, query = tail.partition("?")
    if qsep:
        query, fsep, fragment = query.partition("#")
        tail = path + "?" + redact_query(query) + fsep + fragment
    return scheme + "://" + authority + tail


def redact_query(query: str) -> str:
    """A query string with the values of :data:`SECRET_QUERY_KEYS` replaced by REDACTED, and
    URLs given as values redacted with :func:`redact_url`."""
    pairs = query.split("&")
    for index, pair in enumerate(pairs):
        key, _, value = pair.partition("=")
        if not value:
            continue
        if unquote_plus(key).strip().lower() in SECRET_QUERY_KEYS:
            pairs[index] = f"{key}={REDACTED}"
        elif "%3A" in value.upper() or "://" in value:  # a URL as a value: ``url=https%3A...``
            decoded = unquote_plus(value)
            redacted = redact_url(decoded)
            if redacted != decoded:
                pairs[index] = f"{key}={quote(redacted, safe='/:')}"
    return "&".join(pairs)
