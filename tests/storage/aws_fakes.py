"""Scripted AWS endpoints on loopback, for the credential tests.

One real HTTP server on 127.0.0.1 plays every part the credential chain
talks to: an S3 stand-in that checks each request's SigV4 signature with
botocore's signer (an implementation the store does not use) and its
``X-Amz-Security-Token``, STS (AssumeRoleWithWebIdentity), a container
credentials endpoint and the instance metadata service (IMDSv2). Every
request is recorded. Credentials it hands out are numbered, so a test can
tell which one signed a request.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator

import attrs
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

IMDS_ROLE = "streamhouse-test-role"
IMDS_TOKEN = "imds-session-token"
ROLE_ARN = "arn:aws:iam::123456789012:role/streamhouse-test"


@attrs.frozen
class Seen:
    """One request the server answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@attrs.frozen
class Issued:
    """One set of credentials the server handed out."""

    access_key: str
    secret_key: str
    session_token: str | None


@attrs.define(eq=False)
class FakeAws:
    """The server's state: what it was asked, what it issued, how it answers."""

    endpoint: str = ""
    seen: list[Seen] = attrs.Factory(list)
    issued: list[Issued] = attrs.Factory(list)
    # seconds until expiry of the credentials issued next, one per issue
    # (the last one repeats)
    lifetimes: list[float] = attrs.Factory(lambda: [6 * 3600.0])
    # what the container endpoint demands in its Authorization header
    container_token: str | None = None
    known: dict[str, Issued] = attrs.Factory(dict)
    objects: dict[str, bytes] = attrs.Factory(dict)
    s3_failures: list[str] = attrs.Factory(list)
    lock: threading.Lock = attrs.Factory(threading.Lock)

    def add_static(self, access_key: str, secret_key: str, token: str | None = None) -> None:
        """Accept fixed credentials too (from files or the environment)."""
        self.known[access_key] = Issued(access_key, secret_key, token)

    def issue(self) -> tuple[Issued, str]:
        """New temporary credentials and their expiry time (ISO 8601)."""
        with self.lock:
            n = len(self.issued) + 1
            lifetime = self.lifetimes[min(n, len(self.lifetimes)) - 1]
            creds = Issued(f"ASIATEMP{n:04d}", f"temp-secret-{n}", f"temp-token-{n}")
            self.issued.append(creds)
            self.known[creds.access_key] = creds
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=lifetime)
        return creds, expiry.strftime("%Y-%m-%dT%H:%M:%SZ")

    def s3_requests(self) -> list[Seen]:
        """The requests that reached the S3 stand-in."""
        return [s for s in self.seen if s.path.startswith("/bkt")]

    def check_signature(self, seen: Seen) -> str | None:
        """Why the request's SigV4 signature or token is wrong, or None."""
        auth = seen.headers.get("authorization", "")
        try:
            scheme, rest = auth.split(" ", 1)
            fields = dict(part.strip().split("=", 1) for part in rest.split(","))
            access_key, _date, region, service, _ = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
        except (ValueError, KeyError):
            return "AuthorizationHeaderMalformed"
        creds = self.known.get(access_key)
        if scheme != "AWS4-HMAC-SHA256" or creds is None:
            return "InvalidAccessKeyId"
        if creds.session_token is not None:
            if seen.headers.get("x-amz-security-token") != creds.session_token:
                return "InvalidToken"
            if "x-amz-security-token" not in signed:
                return "InvalidToken: the session token is not signed"
        request = AWSRequest(
            method=seen.method,
            url=f"{self.endpoint}{seen.path}",
            headers={name: seen.headers[name] for name in signed},
            data=seen.body,
        )
        request.context["timestamp"] = seen.headers["x-amz-date"]
        signer = S3SigV4Auth(
            BotoCredentials(creds.access_key, creds.secret_key, creds.session_token),
            service,
            region,
        )
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        return None if expected == fields["Signature"] else "SignatureDoesNotMatch"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads ``FakeAws.seen`` instead."""

    def _answer(self, status: int, body: bytes = b"", ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        fake = self.server.fake
        fake.seen.append(seen)
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/bkt"):
            self._s3(fake, seen, path)
        elif path == "/sts/":
            self._sts(fake, body)
        elif path == "/container/credentials":
            if fake.container_token and seen.headers.get("authorization") != fake.container_token:
                self._answer(401, b"missing or wrong authorization token")
                return
            self._credentials_json(fake)
        elif path == "/latest/api/token" and self.command == "PUT":
            self._answer(200, IMDS_TOKEN.encode())
        elif path.startswith("/latest/meta-data/iam/security-credentials"):
            if seen.headers.get("x-aws-ec2-metadata-token") != IMDS_TOKEN:
                self._answer(401)
            elif path.rstrip("/").endswith("security-credentials"):
                self._answer(200, IMDS_ROLE.encode())
            elif path.endswith("/" + IMDS_ROLE):
                self._credentials_json(fake, imds=True)
            else:
                self._answer(404)
        else:
            self._answer(404)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    def _credentials_json(self, fake: FakeAws, *, imds: bool = False) -> None:
        creds, expiry = fake.issue()
        doc = {
            "AccessKeyId": creds.access_key,
            "SecretAccessKey": creds.secret_key,
            "Token": creds.session_token,
            "Expiration": expiry,
        }
        if imds:
            doc.update(Code="Success", Type="AWS-HMAC", LastUpdated=expiry)
        self._answer(200, json.dumps(doc).encode(), "application/json")

    def _sts(self, fake: FakeAws, body: bytes) -> None:
        form = urllib.parse.parse_qs(body.decode())
        if form.get("Action") != ["AssumeRoleWithWebIdentity"] or form.get("RoleArn") != [ROLE_ARN]:
            self._answer(400, b"<ErrorResponse><Error><Code>InvalidAction</Code></Error>")
            return
        if form.get("WebIdentityToken") != ["the-web-identity-token"]:
            self._answer(
                403,
                b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                b"<Message>bad token</Message></Error></ErrorResponse>",
                "text/xml",
            )
            return
        creds, expiry = fake.issue()
        xml = (
            '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleWithWebIdentityResult><Credentials>"
            f"<AccessKeyId>{creds.access_key}</AccessKeyId>"
            f"<SecretAccessKey>{creds.secret_key}</SecretAccessKey>"
            f"<SessionToken>{creds.session_token}</SessionToken>"
            f"<Expiration>{expiry}</Expiration></Credentials>"
            "<SubjectFromWebIdentityToken>test</SubjectFromWebIdentityToken>"
            f"<AssumedRoleUser><Arn>{ROLE_ARN}/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId>"
            "</AssumedRoleUser></AssumeRoleWithWebIdentityResult>"
            "<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>"
        )
        self._answer(200, xml.encode(), "text/xml")

    def _s3(self, fake: FakeAws, seen: Seen, path: str) -> None:
        problem = fake.check_signature(seen)
        if problem is not None:
            fake.s3_failures.append(problem)
            code = problem.split(":")[0]
            self._answer(
                403, f"<Error><Code>{code}</Code><Message>{problem}</Message></Error>".encode()
            )
            return
        if self.command == "PUT":
            fake.objects[path] = seen.body
            self._answer(200)
        elif path == "/bkt":
            self._answer(200, b"<ListBucketResult></ListBucketResult>", "application/xml")
        elif path in fake.objects:
            self._answer(200, fake.objects[path], "application/octet-stream")
        else:
            self._answer(404, b"<Error><Code>NoSuchKey</Code></Error>")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeAws


@contextlib.contextmanager
def running_fake_aws() -> Iterator[FakeAws]:
    """Serve a FakeAws on a free loopback port until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    fake = FakeAws(endpoint=f"http://127.0.0.1:{server.server_address[1]}")
    server.fake = fake
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="fake-aws", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
