"""Fetch ``s3://bucket/key`` archives with boto3, streamed to disk under the size limit.

Credentials, region and endpoint come from the usual AWS sources (environment, shared config
and credentials files, instance roles).  ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` point it
at an S3-compatible store (MinIO, Ceph, moto); ``TSF_S3_ENDPOINT_URL`` does the same for tsf
only.  The URL must still pass ``allowed_urls`` (e.g. ``s3://models-bucket/.*``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tsf import hookimpl
from tsf.errors import BadRequest, Forbidden, InvalidArchive, ModelNotFound, TsfError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def parse_s3_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key or key.endswith("/"):
        raise BadRequest(f"{url!r} is not an s3://bucket/key URL of an archive")
    return bucket, key


def client(config: Any) -> Any:
    import boto3
    from botocore.config import Config

    timeout = float(getattr(config, "download_timeout", 60))
    return boto3.client("s3", endpoint_url=os.environ.get("TSF_S3_ENDPOINT_URL") or None,
                        config=Config(connect_timeout=timeout, read_timeout=timeout,
                                      retries={"max_attempts": 3}))


def _translate(url: str, exc: Exception) -> TsfError:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return BadRequest(f"no AWS credentials to read {url} (set AWS_ACCESS_KEY_ID or a "
                          "profile)")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            return ModelNotFound(f"{url} does not exist")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return Forbidden(f"access to {url} was denied ({code})")
    return BadRequest(f"could not fetch {url}: {exc}")


@hookimpl
def tsf_fetch_archive(url: str, dest: str, config: Any) -> str | None:
    if urlsplit(url).scheme != "s3":
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = parse_s3_url(url)
    limit = config.max_archive_size
    suffix = "".join(Path(key).suffixes[-2:]) or ".mar"
    target = Path(tempfile.mkstemp(prefix="s3-", suffix=suffix, dir=dest)[1])
    try:
        s3 = client(config)
        size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        if size > limit:
            raise InvalidArchive(f"{url} is {size} bytes, over max_archive_size ({limit} bytes)")
        log.info("downloading %s (%d bytes)", url, size)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        written = 0
        with open(target, "wb") as out:
            for chunk in body.iter_chunks(CHUNK):
                written += len(chunk)
                if written > limit:
                    raise InvalidArchive(f"{url} grew past max_archive_size ({limit} bytes)")
                out.write(chunk)
        log.info("downloaded %s", url)
        return str(target)
    except TsfError:
        target.unlink(missing_ok=True)
        raise
    except (BotoCoreError, ClientError) as exc:
        target.unlink(missing_ok=True)
        raise _translate(url, exc) from None
