"""PostgreSQL URLs: the schema parameter is StreamHouse's, the rest libpq's."""

from __future__ import annotations

import re
import urllib.parse

from .._errors import ConfigurationError

__all__ = ["check_schema_name", "redact", "scrub", "split_postgres_url"]

_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_schema_name(schema: object) -> str:
    """A schema name reaches SQL only as an identifier, and must look like one."""
    if not isinstance(schema, str) or _SCHEMA_RE.fullmatch(schema) is None:
        raise ConfigurationError(
            f"schema name {schema!r} must be 1-63 ASCII letters, digits or '_', "
            "not starting with a digit"
        )
    if schema.lower().startswith("pg_"):
        raise ConfigurationError(f"schema name {schema!r} is reserved (pg_ prefix)")
    return schema


def split_postgres_url(url: str) -> tuple[str, str | None]:
    """``(libpq URL without ?schema, schema or None)``.

    Raises:
        ConfigurationError: not a postgres(ql):// URL, or libpq refuses it.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ConfigurationError(f"{redact(url)!r} is not a postgresql:// URL")
    if parsed.fragment:
        raise ConfigurationError(f"{redact(url)!r} has a fragment (#...)")
    # The other parameters stay as they were written, for libpq to decode.
    params = [p for p in parsed.query.split("&") if p]
    mine = [p for p in params if urllib.parse.unquote(p.partition("=")[0]) == "schema"]
    if len(mine) > 1:
        raise ConfigurationError(f"{redact(url)!r} names more than one schema")
    schemas = [urllib.parse.unquote(p.partition("=")[2]) for p in mine]
    rest = "&".join(p for p in params if p not in mine)
    conninfo = url.partition("?")[0] + ("?" + rest if rest else "")
    import psycopg.conninfo  # (here: a process on SQLite never loads psycopg, 0.12 s)

    try:
        psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        # libpq quotes the part it could not parse, which may hold the
        # password: the message is scrubbed and the original not chained.
        raise ConfigurationError(
            f"bad PostgreSQL URL {redact(url)!r}: {scrub(str(exc), url)}"
        ) from None
    return conninfo, check_schema_name(schemas[0]) if schemas else None


def redact(url: str) -> str:
    """``url`` with its password (in the netloc or the query) replaced by ***."""
    parsed = urllib.parse.urlsplit(url)
    netloc = parsed.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = userinfo.split(":", 1)[0] + ":***@" + hostport
    query = "&".join(
        "password=***" if urllib.parse.unquote(p.partition("=")[0]) == "password" else p
        for p in parsed.query.split("&")
        if p
    )
    return f"{parsed.scheme}://{netloc}{parsed.path}" + (f"?{query}" if query else "")


def scrub(text: str, url: str) -> str:
    """``text`` without the passwords ``url`` holds (as written and decoded)."""
    parsed = urllib.parse.urlsplit(url)
    found = [parsed.netloc.rpartition("@")[0].partition(":")[2]] if "@" in parsed.netloc else []
    found += [
        p.partition("=")[2]
        for p in parsed.query.split("&")
        if urllib.parse.unquote(p.partition("=")[0]) == "password"
    ]
    for secret in sorted({f for raw in found for f in (raw, urllib.parse.unquote(raw))}, key=len,
                         reverse=True):  # fmt: skip
        if secret:
            text = text.replace(secret, "***")
    return text.strip()
