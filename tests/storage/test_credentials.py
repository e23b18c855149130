"""AWS credentials found the way AWS's SDKs find them, each source against a
scripted loopback endpoint (aws_fakes): the S3 stand-in checks every
signature with botocore's signer and every session token."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamhouse import (
    ConfigurationError,
    S3ObjectStore,
    StorageAuthError,
    object_store_from_url,
)
from streamhouse._storage.credentials import (
    AwsCredentialChain,
    Credentials,
    StaticCredentials,
)

from ..helpers import FAST_RETRY
from .aws_fakes import IMDS_ROLE, ROLE_ARN, FakeAws, running_fake_aws

pytestmark = pytest.mark.anyio


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment with no AWS settings at all, and no way to reach a real AWS.

    The instance metadata service is off unless a test points it at loopback.
    """
    for name in list(os.environ):
        if name.startswith(("AWS_", "BOTO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("BOTO_CONFIG", str(tmp_path / "no-boto"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return tmp_path


@pytest.fixture
def fake() -> Iterator[FakeAws]:
    """The scripted loopback endpoints."""
    with running_fake_aws() as server:
        yield server


def _store(fake: FakeAws, **kwargs: str) -> S3ObjectStore:
    store = object_store_from_url("s3://bkt/p", endpoint=fake.endpoint, **kwargs)
    assert isinstance(store, S3ObjectStore)
    store.retry = FAST_RETRY
    return store


async def _round_trip(store: S3ObjectStore) -> None:
    await store.put("k", b"payload")
    assert await store.get("k") == b"payload"
    await store.check()
    await store.aclose()


async def test_argument_keys_and_session_token_sign_requests(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys given as arguments win over the variables; their session token is sent and signed."""
    fake.add_static("AKIDARG", "secret-arg", "token-arg")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-env")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-env")
    store = _store(fake, access_key="AKIDARG", secret_key="secret-arg", session_token="token-arg")
    await _round_trip(store)
    assert fake.s3_failures == []
    assert {s.headers["x-amz-security-token"] for s in fake.s3_requests()} == {"token-arg"}


async def test_the_stand_in_refuses_a_wrong_signature_or_token(
    aws_env: Path, fake: FakeAws
) -> None:
    """The S3 stand-in is a real check: a wrong secret or a missing token is refused."""
    fake.add_static("AKIDA", "right-secret")
    fake.add_static("AKIDB", "secret-b", "token-b")
    wrong_secret = _store(fake, access_key="AKIDA", secret_key="wrong-secret")
    no_token = _store(fake, access_key="AKIDB", secret_key="secret-b")
    for store in (wrong_secret, no_token):
        with pytest.raises(StorageAuthError):
            await store.put("k", b"x")
        await store.aclose()
    assert fake.s3_failures == ["SignatureDoesNotMatch", "InvalidToken"]


async def test_environment_keys_and_session_token_need_no_botocore(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN make fixed credentials."""
    fake.add_static("AKIDENV", "secret-env", "token-env")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-env")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-env")
    monkeypatch.setattr("streamhouse._config.botocore_available", lambda: False)
    store = _store(fake)
    assert isinstance(store.credentials, StaticCredentials)
    await _round_trip(store)
    assert fake.s3_failures == []
    assert {s.headers["x-amz-security-token"] for s in fake.s3_requests()} == {"token-env"}


async def test_a_profile_in_the_shared_credentials_file(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_PROFILE picks a profile of AWS_SHARED_CREDENTIALS_FILE."""
    fake.add_static("AKIDPROFILE", "secret-profile", "token-profile")
    path = aws_env / "credentials"
    path.write_text(
        "[default]\naws_access_key_id = AKIDWRONG\naws_secret_access_key = wrong\n"
        "[dev]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = secret-profile\n"
        "aws_session_token = token-profile\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
    monkeypatch.setenv("AWS_PROFILE", "dev")
    store = _store(fake)
    assert isinstance(store.credentials, AwsCredentialChain)
    await _round_trip(store)
    assert fake.s3_failures == []
    assert store.credentials.method == "shared-credentials-file"


async def test_a_profile_in_the_config_file(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_PROFILE also finds keys in AWS_CONFIG_FILE's [profile NAME] section."""
    fake.add_static("AKIDCONFIG", "secret-config")
    path = aws_env / "config"
    path.write_text(
        "[profile ops]\naws_access_key_id = AKIDCONFIG\naws_secret_access_key = secret-config\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    monkeypatch.setenv("AWS_PROFILE", "ops")
    store = _store(fake)
    await _round_trip(store)
    assert fake.s3_failures == []
    assert all("x-amz-security-token" not in s.headers for s in fake.s3_requests())


async def test_the_region_comes_from_the_profile_when_no_variable_names_one(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in AWS's SDKs: the argument, AWS_REGION, AWS_DEFAULT_REGION, then the
    ``region`` of AWS_PROFILE (or default) in AWS_CONFIG_FILE, then us-east-1;
    requests are signed for it, and the default endpoint is in it."""
    fake.add_static("AKIDCONFIG", "secret-config")
    path = aws_env / "config"
    path.write_text(
        "[default]\nregion = eu-central-1\n"
        "[profile ops]\nregion = ap-south-1\n"
        "aws_access_key_id = AKIDCONFIG\naws_secret_access_key = secret-config\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    monkeypatch.delenv("AWS_REGION")
    assert _store(fake).region == "eu-central-1"  # the default profile's
    monkeypatch.setenv("AWS_PROFILE", "ops")
    store = _store(fake)
    assert store.region == "ap-south-1"
    await _round_trip(store)
    assert fake.s3_failures == []
    scopes = {
        s.headers["authorization"].split("Credential=")[1].split(",")[0] for s in fake.s3_requests()
    }
    assert {scope.split("/")[2] for scope in scopes} == {"ap-south-1"}
    implicit = object_store_from_url("s3://bkt")
    assert isinstance(implicit, S3ObjectStore)
    assert implicit.endpoint == "https://s3.ap-south-1.amazonaws.com"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "sa-east-1")
    assert _store(fake).region == "sa-east-1"  # a variable wins over the file
    monkeypatch.setenv("AWS_REGION", "ca-central-1")
    assert _store(fake).region == "ca-central-1"
    assert _store(fake, region="eu-west-3").region == "eu-west-3"  # and an argument over all
    path.write_text("[profile ops]\naws_access_key_id = AKIDCONFIG\n")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    assert _store(fake).region == "us-east-1"  # named nowhere


def test_a_missing_profile_or_a_malformed_config_names_the_problem(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking for the region, a profile that does not exist or a config file
    that does not parse is a ConfigurationError that says so, at once."""
    monkeypatch.delenv("AWS_REGION")
    path = aws_env / "config"
    path.write_text("[profile ops]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    monkeypatch.setenv("AWS_PROFILE", "opz")
    with pytest.raises(ConfigurationError, match=r"AWS region: .*opz"):
        object_store_from_url("s3://bkt", endpoint="http://127.0.0.1:1")
    path.write_text("region = outside any section\n")
    monkeypatch.setenv("AWS_PROFILE", "ops")
    with pytest.raises(ConfigurationError, match=r"AWS region: .*config"):
        object_store_from_url("s3://bkt", endpoint="http://127.0.0.1:1")


async def test_web_identity_assumes_the_role_through_sts(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN gets credentials from STS."""
    token_file = aws_env / "web-identity-token"
    token_file.write_text("the-web-identity-token")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"{fake.endpoint}/sts/")
    store = _store(fake)
    await _round_trip(store)
    assert fake.s3_failures == []
    assert [s.method for s in fake.seen if s.path.startswith("/sts/")] == ["POST"]
    assert {s.headers["x-amz-security-token"] for s in fake.s3_requests()} == {"temp-token-1"}


async def test_web_identity_refused_by_sts_is_an_auth_error(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A web identity token STS refuses raises StorageAuthError, not a botocore error."""
    token_file = aws_env / "web-identity-token"
    token_file.write_text("a-stolen-token")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"{fake.endpoint}/sts/")
    store = _store(fake)
    with pytest.raises(StorageAuthError, match="refused"):
        await store.put("k", b"x")
    assert fake.s3_requests() == []
    await store.aclose()


async def test_container_credentials_with_an_authorization_token_file(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_CONTAINER_CREDENTIALS_FULL_URI is asked with the token from its file."""
    fake.container_token = "pod-identity-token"
    token_file = aws_env / "container-token"
    token_file.write_text("pod-identity-token")
    monkeypatch.setenv(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{fake.endpoint}/container/credentials"
    )
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token_file))
    store = _store(fake)
    await _round_trip(store)
    assert fake.s3_failures == []
    container = [s for s in fake.seen if s.path == "/container/credentials"]
    assert [s.headers["authorization"] for s in container] == ["pod-identity-token"]
    assert {s.headers["x-amz-security-token"] for s in fake.s3_requests()} == {"temp-token-1"}


async def test_container_credentials_with_an_authorization_token(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_CONTAINER_AUTHORIZATION_TOKEN goes to the container endpoint as it is."""
    fake.container_token = "ecs-token"
    monkeypatch.setenv(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{fake.endpoint}/container/credentials"
    )
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ecs-token")
    store = _store(fake)
    await _round_trip(store)
    assert fake.s3_failures == []
    assert store.credentials is not None
    assert isinstance(store.credentials, AwsCredentialChain)
    assert store.credentials.method == "container-role"


async def test_instance_metadata_service_v2(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMDSv2: a token PUT, then the role and its credentials fetched with the token."""
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"{fake.endpoint}/")
    store = _store(fake)
    await _round_trip(store)
    assert fake.s3_failures == []
    imds = [(s.method, s.path) for s in fake.seen if s.path.startswith("/latest/")]
    role_path = "/latest/meta-data/iam/security-credentials/"
    assert imds[:3] == [
        ("PUT", "/latest/api/token"), ("GET", role_path), ("GET", role_path + IMDS_ROLE),
    ]  # fmt: skip
    assert {s.headers["x-amz-security-token"] for s in fake.s3_requests()} == {"temp-token-1"}


async def test_temporary_credentials_are_refreshed_before_they_expire(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials within 15 minutes of expiry are replaced before the next request; fresh
    ones are reused without asking again."""
    # 12 minutes: still valid, but inside botocore's 15-minute refresh window.
    fake.lifetimes = [12 * 60.0, 12 * 60.0, 6 * 3600.0]
    monkeypatch.setenv(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{fake.endpoint}/container/credentials"
    )
    store = _store(fake)
    for i in range(4):
        await store.put(f"k{i}", b"x")
    await store.aclose()
    assert fake.s3_failures == []
    tokens = [s.headers["x-amz-security-token"] for s in fake.s3_requests()]
    # The first set was due at once (botocore refreshes on first use); the
    # second was used once, then replaced; the third, good for hours, stays.
    assert tokens == ["temp-token-2", "temp-token-3", "temp-token-3", "temp-token-3"]
    assert len(fake.issued) == 3


async def test_no_credentials_anywhere_is_a_configuration_error(
    aws_env: Path, fake: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no source of credentials the first request raises ConfigurationError naming
    the sources; without botocore, building the store does."""
    store = _store(fake)
    with pytest.raises(ConfigurationError, match="no AWS credentials found in arguments"):
        await store.put("k", b"x")
    await store.aclose()
    assert fake.seen == []
    monkeypatch.setattr("streamhouse._config.botocore_available", lambda: False)
    with pytest.raises(ConfigurationError, match="AWS_ACCESS_KEY_ID") as caught:
        object_store_from_url("s3://bkt")
    assert "streamhouse[aws]" in str(caught.value)


def test_half_a_key_pair_is_a_configuration_error(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An access key without a secret key (or the reverse) is refused at construction."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    with pytest.raises(ConfigurationError, match="incomplete: an access key without a secret key"):
        object_store_from_url("s3://bkt")


def test_credentials_never_appear_in_reprs() -> None:
    """Credentials, providers and stores show no key, secret or token."""
    creds = Credentials("AKIDSECRETLOOKING", "the-secret", "the-token")
    store = S3ObjectStore(
        bucket="b", prefix="", endpoint="http://127.0.0.1:1", region="us-east-1",
        credentials=StaticCredentials(creds),
    )  # fmt: skip
    for text in (repr(creds), repr(StaticCredentials(creds)), repr(store)):
        assert "AKIDSECRETLOOKING" not in text
        assert "the-secret" not in text
        assert "the-token" not in text
