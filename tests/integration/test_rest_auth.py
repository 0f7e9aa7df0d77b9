"""`controlloop serve` with --token-file and TLS over real HTTP(S); off by default."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from controlloop.cli import main
from controlloop.server import create_app
from controlloop.server.testing import LiveServer

pytestmark = pytest.mark.integration

SYSTEM_PATH = "/optimizeOne"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_token_required_on_all_but_probes() -> None:
    with LiveServer(create_app(token="t0ken")) as srv:
        assert httpx.get(srv.url + "/healthz").status_code == 200
        for method, path in (("GET", "/metrics"), ("GET", "/openapi.json"),
                             ("POST", SYSTEM_PATH)):
            resp = httpx.request(method, srv.url + path, json={})
            assert resp.status_code == 401, path
            assert resp.headers["www-authenticate"].startswith("Bearer")
            bad = httpx.request(method, srv.url + path, json={},
                                headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
        ok = httpx.get(srv.url + "/metrics", headers={"Authorization": "Bearer t0ken"})
        assert ok.status_code == 200
        # Authenticated requests reach the API (a bad body is the API's 4xx, not 401).
        body = httpx.post(srv.url + SYSTEM_PATH, json={}, headers={"Authorization":
                                                                   "Bearer t0ken"})
        assert body.status_code not in (401, 403)


def test_no_token_by_default() -> None:
    with LiveServer(create_app()) as srv:
        assert httpx.get(srv.url + "/metrics").status_code == 200


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with LiveServer(create_app(token="t"), ssl_certfile=str(cert),
                    ssl_keyfile=str(key)) as srv:
        assert srv.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        resp = httpx.get(srv.url + "/metrics", verify=ctx, headers={"Authorization": "Bearer t"})
        assert resp.status_code == 200
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError)):
            httpx.get(srv.url.replace("https", "http") + "/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # not trusted without the CA
            httpx.get(srv.url + "/healthz", timeout=5)


def test_serve_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--tls-cert", str(tmp_path / "c")]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    assert main(["serve", "--tls-cert", str(tmp_path / "c"), "--tls-key",
                 str(tmp_path / "k")]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert main(["serve", "--token-file", str(empty)]) == 2
    assert "the file is empty" in capsys.readouterr().err
