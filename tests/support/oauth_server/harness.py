"""Launcher and client of the test authorization server (django-oauth-toolkit behind waitress, on loopback).

    server = OAuthServer.start(tmp_dir)                 # migrates a fresh SQLite DB, starts, waits until it answers
    app = server.create_app(redirect_uris=["http://127.0.0.1:5555/callback"])
    server.create_user("alice", "pw")
    verifier, challenge = pkce_pair()
    url = server.authorization_request_url(app, redirect_uri=..., state="s", code_challenge=challenge)
    ...
    server.stats(app.client_id)  # {"authorization_code_grants": 1, "refresh_grants": 0, ...}
    server.stop()

The control calls are synchronous (urllib) and take milliseconds; they are safe to call from async tests because the
server is another process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TypedDict
from urllib.parse import urlencode

PROJECT_DIR = Path(__file__).resolve().parent
ADMIN_HEADER = "X-Test-Admin-Token"

GrantType = Literal["authorization-code", "client-credentials"]


class OAuthServerError(RuntimeError):
    """The authorization server did not start, or a control call failed."""


class GrantStats(TypedDict):
    authorization_code_grants: int
    refresh_grants: int
    client_credentials_grants: int


@dataclass(frozen=True)
class OAuthApp:
    """A registered client. `client_secret` is the plain secret (the server keeps only its hash)."""

    client_id: str
    client_secret: str
    name: str
    grant_type: str
    client_type: str
    redirect_uris: list[str] = field(default_factory=list)
    skip_authorization: bool = False

    @property
    def redirect_uri(self) -> str:
        """The first registered redirect URI."""
        if not self.redirect_uris:
            raise ValueError(f"app {self.client_id} has no redirect URI")
        return self.redirect_uris[0]


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE (code_verifier, S256 code_challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


class OAuthServer:
    """A running test authorization server. Create it with `OAuthServer.start`."""

    def __init__(
        self,
        *,
        url: str,
        process: subprocess.Popen[bytes],
        data_dir: Path,
        admin_token: str,
        log_path: Path,
        log_file: IO[bytes],
    ) -> None:
        self.url = url
        self.process = process
        self.data_dir = data_dir
        self.admin_token = admin_token
        self.log_path = log_path
        self._log_file = log_file

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def start(
        cls,
        tmp_dir: Path | str,
        *,
        access_token_ttl: int = 3600,
        threads: int = 32,
        timeout: float = 60.0,
    ) -> OAuthServer:
        """Migrates a fresh SQLite database under `tmp_dir`, starts the server on a free loopback port and waits
        until it answers. `access_token_ttl` is the lifetime (seconds) of the access tokens it issues."""
        data_dir = Path(tmp_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        admin_token = secrets.token_urlsafe(32)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "authserver.settings",
            "OAUTH_AS_DATA_DIR": str(data_dir),
            "OAUTH_AS_ADMIN_TOKEN": admin_token,
            "OAUTH_AS_ACCESS_TOKEN_TTL": str(access_token_ttl),
            "PYTHONUNBUFFERED": "1",
        }
        deadline = time.monotonic() + timeout

        migrate = subprocess.run(
            [sys.executable, str(PROJECT_DIR / "manage.py"), "migrate", "--noinput", "-v", "0"],
            cwd=PROJECT_DIR,
            env=env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if migrate.returncode != 0:
            output = (migrate.stdout + migrate.stderr).decode(errors="replace")
            raise OAuthServerError(f"migrating the authorization server database failed:\n{output}")

        port_file = data_dir / "port"
        port_file.unlink(missing_ok=True)
        log_path = data_dir / "server.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                str(PROJECT_DIR / "serve.py"),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--threads",
                str(threads),
            ],
            cwd=PROJECT_DIR,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        server: OAuthServer | None = None
        try:
            while not port_file.exists():
                cls._check_alive(process, log_path, deadline)
                time.sleep(0.05)
            server = cls(
                url=f"http://127.0.0.1:{int(port_file.read_text())}",
                process=process,
                data_dir=data_dir,
                admin_token=admin_token,
                log_path=log_path,
                log_file=log_file,
            )
            while True:
                cls._check_alive(process, log_path, deadline)
                try:
                    with urllib.request.urlopen(server.url + "/test/health", timeout=2) as response:  # noqa: S310
                        if response.status == 200:
                            return server
                except OSError:
                    pass
                time.sleep(0.05)
        except BaseException:
            if server is not None:
                server.stop()
            else:
                _terminate(process)
                log_file.close()
            raise

    @staticmethod
    def _check_alive(process: subprocess.Popen[bytes], log_path: Path, deadline: float) -> None:
        if process.poll() is not None:
            raise OAuthServerError(
                f"authorization server exited with {process.returncode}:\n{log_path.read_text(errors='replace')}"
            )
        if time.monotonic() > deadline:
            raise OAuthServerError(
                f"authorization server did not answer in time:\n{log_path.read_text(errors='replace')}"
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Stops the server process (by its PID) and closes its log."""
        _terminate(self.process)
        if not self._log_file.closed:
            self._log_file.close()

    def __enter__(self) -> OAuthServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log(self) -> str:
        """What the server printed so far (errors of `django.request` and `oauth2_provider` land here)."""
        return self.log_path.read_text(errors="replace")

    # ---------------------------------------------------------------- endpoints

    @property
    def authorize_url(self) -> str:
        return self.url + "/o/authorize/"

    @property
    def token_url(self) -> str:
        return self.url + "/o/token/"

    @property
    def revoke_url(self) -> str:
        return self.url + "/o/revoke_token/"

    @property
    def introspect_url(self) -> str:
        return self.url + "/o/introspect/"

    @property
    def me_url(self) -> str:
        return self.url + "/api/me"

    @property
    def login_url(self) -> str:
        return self.url + "/accounts/login/"

    def authorization_request_url(
        self,
        app: OAuthApp,
        *,
        redirect_uri: str | None = None,
        scope: str = "read write",
        state: str | None = None,
        code_challenge: str | None = None,
        code_challenge_method: str = "S256",
    ) -> str:
        """The authorize URL a browser is sent to. Without `code_challenge` the server refuses it (PKCE required)."""
        params = {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": redirect_uri or app.redirect_uri,
            "scope": scope,
        }
        if state is not None:
            params["state"] = state
        if code_challenge is not None:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = code_challenge_method
        return self.authorize_url + "?" + urlencode(params)

    # ---------------------------------------------------------------- control API

    def create_app(
        self,
        *,
        name: str = "test app",
        redirect_uris: Sequence[str] = (),
        grant_type: GrantType = "authorization-code",
        client_type: Literal["confidential", "public"] = "confidential",
        skip_authorization: bool = False,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> OAuthApp:
        """Registers a client. An authorization-code app may also use the refresh grant; DOT allows one grant
        type per app, so client credentials need an app of their own."""
        body: dict[str, Any] = {
            "name": name,
            "redirect_uris": list(redirect_uris),
            "grant_type": grant_type,
            "client_type": client_type,
            "skip_authorization": skip_authorization,
        }
        if client_id is not None:
            body["client_id"] = client_id
        if client_secret is not None:
            body["client_secret"] = client_secret
        answer = self._call("POST", "/test/apps", body)
        return OAuthApp(
            client_id=answer["client_id"],
            client_secret=answer["client_secret"],
            name=answer["name"],
            grant_type=answer["grant_type"],
            client_type=answer["client_type"],
            redirect_uris=list(answer["redirect_uris"]),
            skip_authorization=bool(answer["skip_authorization"]),
        )

    def create_user(self, username: str, password: str) -> None:
        """Creates the user (or resets the password of an existing one)."""
        self._call("POST", "/test/users", {"username": username, "password": password})

    def revoke(self, client_id: str) -> dict[str, int]:
        """Revokes all refresh tokens and access tokens of the client."""
        answer: dict[str, int] = self._call("POST", "/test/revoke", {"client_id": client_id})
        return answer

    def expire_access_tokens(self, client_id: str) -> int:
        """Sets the expiry of all access tokens of the client in the past; returns how many."""
        return int(self._call("POST", "/test/expire", {"client_id": client_id})["access_tokens_expired"])

    def stats(self, client_id: str) -> GrantStats:
        """Successful (HTTP 200) token-endpoint grants of the client, by grant type."""
        answer = self._call("GET", "/test/stats?" + urlencode({"client_id": client_id}))
        return GrantStats(
            authorization_code_grants=int(answer["authorization_code_grants"]),
            refresh_grants=int(answer["refresh_grants"]),
            client_credentials_grants=int(answer["client_credentials_grants"]),
        )

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - always our own http://127.0.0.1 URL
            self.url + path,
            data=data,
            method=method,
            headers={ADMIN_HEADER: self.admin_token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise OAuthServerError(f"{method} {path} -> {exc.code}: {detail}") from exc


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
