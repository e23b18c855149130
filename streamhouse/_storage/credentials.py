"""AWS credentials: fixed keys, or found the way AWS's own SDKs find them.

Two sources, behind one small protocol (``await provider.get()``):

- :class:`StaticCredentials`: keys given as arguments or in
  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and
  ``AWS_SESSION_TOKEN``). No dependency beyond the package's own.
- :class:`AwsCredentialChain`: botocore's credential resolver, the chain
  every AWS SDK walks: the environment, ``AWS_PROFILE`` with the shared
  credentials and config files (``AWS_SHARED_CREDENTIALS_FILE``,
  ``AWS_CONFIG_FILE``; also assume-role, SSO and ``credential_process``
  profiles), web identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` with
  ``AWS_ROLE_ARN``, through STS AssumeRoleWithWebIdentity), container
  credentials (``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`` / ``_FULL_URI``
  with ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` or ``..._TOKEN_FILE``) and the
  instance metadata service (IMDSv2: a token PUT, then GETs). It needs the
  optional ``streamhouse[aws]`` extra (botocore).

Why botocore: the chain has a dozen sources with subtle rules (which
variable disables which source, IMDS's token dance, container endpoints that
must be loopback, refresh windows); AWS maintains botocore's copy, and a
hand-written one would drift from it.

botocore is synchronous and may do network I/O (STS, IMDS, a container
endpoint), so every call into it runs in a worker thread. Temporary
credentials are refreshed ahead of their expiry: botocore's own windows
(an advisory refresh from 15 minutes before expiry, a mandatory one from 10
minutes), checked before each request without a thread when nothing is due;
one refresh runs at a time and concurrent requests wait for it.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Protocol

import anyio
import anyio.to_thread
import attrs

from .._errors import (
    ConfigurationError,
    StorageAuthError,
    StorageUnavailableError,
)

__all__ = [
    "AwsCredentialChain",
    "CredentialProvider",
    "Credentials",
    "StaticCredentials",
    "botocore_available",
    "profile_region",
]

_SOURCES = (
    "arguments, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared "
    "credentials/config files, web identity, container credentials or the instance "
    "metadata service"
)


@attrs.frozen(repr=False)
class Credentials:
    """One set of AWS credentials; its repr shows none of them."""

    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        token = ", session_token=..." if self.session_token else ""
        return f"Credentials(access_key=..., secret_key=...{token})"


class CredentialProvider(Protocol):
    """Where an S3 store gets the credentials to sign each request with."""

    async def get(self) -> Credentials:
        """Credentials valid for at least the next request."""
        ...


@attrs.frozen(repr=False)
class StaticCredentials:
    """Credentials that never change (keys from arguments or the environment)."""

    credentials: Credentials

    def __repr__(self) -> str:
        return "StaticCredentials(...)"

    async def get(self) -> Credentials:
        return self.credentials


def botocore_available() -> bool:
    """Whether the ``streamhouse[aws]`` extra (botocore) is installed."""
    return importlib.util.find_spec("botocore") is not None


def profile_region(profile: str | None = None) -> str | None:
    """The ``region`` of a profile of the shared config file (``AWS_CONFIG_FILE``,
    ``~/.aws/config`` by default), as botocore reads it: ``profile``, else
    ``AWS_PROFILE``, else ``default``. None: it names no region.

    A configuration read (no network), so it runs where the store is built.

    Raises:
        ConfigurationError: the profile does not exist, or the file is malformed.
    """
    import botocore.exceptions as bce
    import botocore.session

    try:
        region = botocore.session.Session(profile=profile).get_config_variable("region")
    except (bce.ProfileNotFound, bce.ConfigParseError, bce.InvalidConfigError) as exc:
        raise ConfigurationError(f"AWS region: {exc}") from exc
    return str(region) if region else None


class AwsCredentialChain:
    """Credentials found by botocore's resolver, refreshed before they expire.

    Args:
        profile: a profile of the shared files to use instead of
            ``AWS_PROFILE`` (or ``default``).

    Raises (from :meth:`get`):
        ConfigurationError: no source has credentials, or a profile or
            config file is malformed.
        StorageAuthError: a source refused (e.g. STS denied the role).
        StorageUnavailableError: a source could not be reached (retriable).
    """

    def __init__(self, profile: str | None = None) -> None:
        self._profile = profile
        self._resolved: Any = None  # botocore's Credentials or RefreshableCredentials
        self._current: Credentials | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"AwsCredentialChain(profile={self._profile!r})"

    @property
    def method(self) -> str | None:
        """Which source botocore found the credentials in (e.g. ``"iam-role"``)."""
        return None if self._resolved is None else str(self._resolved.method)

    def _due(self) -> bool:
        if self._current is None:
            return True
        refresh_needed = getattr(self._resolved, "refresh_needed", None)
        return refresh_needed is not None and bool(refresh_needed())

    async def get(self) -> Credentials:
        if not self._due():
            assert self._current is not None
            return self._current
        async with self._lock:
            if self._due():  # nobody refreshed while this task waited
                self._current = await anyio.to_thread.run_sync(self._load)
        assert self._current is not None
        return self._current

    def _load(self) -> Credentials:
        """Resolve (first time) or refresh the credentials; runs in a worker thread."""
        try:
            import botocore.exceptions as bce
        except ImportError as exc:  # pragma: no cover - checked by the factory
            raise ConfigurationError(
                f"S3 needs credentials from {_SOURCES}; install streamhouse[aws] for all but "
                "the first two"
            ) from exc
        try:
            if self._resolved is None:
                import botocore.session

                session = botocore.session.Session(profile=self._profile)
                self._resolved = session.get_credentials()
            frozen = None if self._resolved is None else self._resolved.get_frozen_credentials()
        except (
            bce.ProfileNotFound,
            bce.PartialCredentialsError,
            bce.InvalidConfigError,
            bce.ConfigParseError,
            bce.ConfigNotFound,
            bce.UnknownCredentialError,
            bce.InvalidIMDSEndpointError,
        ) as exc:
            raise ConfigurationError(f"AWS credentials: {exc}") from exc
        except bce.ClientError as exc:
            raise StorageAuthError(f"AWS credentials were refused: {exc}") from exc
        except (bce.BotoCoreError, OSError, ValueError) as exc:
            raise StorageUnavailableError(f"AWS credentials could not be fetched: {exc}") from exc
        if frozen is None:
            raise ConfigurationError(f"no AWS credentials found in {_SOURCES}")
        if not frozen.access_key or not frozen.secret_key:
            raise ConfigurationError(f"incomplete AWS credentials from {self.method}")
        return Credentials(str(frozen.access_key), str(frozen.secret_key), frozen.token or None)
