"""The client against secured servers: ``token=`` (bearer tokens with roles),
``credentials=`` (TLS, as a CA file path or a grpc credentials object),
and an overloaded server (load shedding).

Certificates are made here with the ``cryptography`` package: a CA and a
server certificate it signed for ``localhost`` and ``127.0.0.1``.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import lse_client
import lse_pb2
from lse_client import LseClient

RW = "rw-0123456789abcdef0123456789abcdef"
RO = "ro-0123456789abcdef0123456789abcdef"


class Pki(NamedTuple):
    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(directory: Path) -> Pki:
    ca_cert, ca_key = _ca("Stratum test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.crt", directory / "server.key")
    pki.ca.write_bytes(_pem(ca_cert))
    pki.cert.write_bytes(_pem(cert))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# test tokens\nrw {RW}\nro {RO}\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def token_server(make_server, token_file: Path):
    return make_server("--token-file", str(token_file))


@pytest.fixture
def tls_server(make_server, pki: Pki):
    return make_server("--tls-cert", str(pki.cert), "--tls-key", str(pki.key))


# ---- tokens ----


def test_a_read_write_token_writes_and_reads(token_server):
    with LseClient(token_server.address, token=RW) as lse:
        doc = lse.create_problem("<p>rw</p>", name="x")
        tc = lse.add_test_case(doc, [1, 2])
        lse.set_expected_output(doc, tc, "ok")
        lse.flush()
        assert lse.get_problem_html(doc) == "<p>rw</p>"
        assert lse.get_expected_output(doc, tc)["value"] == "ok"


def test_without_a_token_calls_are_unauthenticated(token_server):
    with LseClient(token_server.address) as lse:
        for call in (lse.get_stats, lambda: lse.create_problem("<p>x</p>"), lse.list_problems):
            with pytest.raises(lse_client.Unauthenticated) as e:
                call()
            assert isinstance(e.value, lse_client.LseError)
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer" in str(e.value)


def test_a_token_the_server_does_not_know_is_unauthenticated(token_server):
    with LseClient(token_server.address, token="not-a-token-of-this-server") as lse:
        with pytest.raises(lse_client.Unauthenticated, match="not valid"):
            lse.get_stats()


def test_a_read_only_token_reads_and_a_write_is_permission_denied(token_server):
    with LseClient(token_server.address, token=RW) as rw:
        doc = rw.create_problem("<p>kept</p>")
        tc = rw.add_test_case(doc, 1)
    with LseClient(token_server.address, token=RO) as ro:
        assert ro.get_problem_html(doc) == "<p>kept</p>"
        assert ro.get_all_test_cases(doc) == [{"tc_id": tc, "value": 1}]
        records = ro.get_stats()["records"]
        writes = {
            "update_problem_html": lambda: ro.update_problem_html(doc, "<p>changed</p>"),
            "add_test_case": lambda: ro.add_test_case(doc, 2),
            "update_test_case": lambda: ro.update_test_case(doc, tc, 3),
            "delete_problem": lambda: ro.delete_problem(doc),
            "flush": ro.flush,
            "compact_now": ro.compact_now,
        }
        for name, call in writes.items():
            with pytest.raises(lse_client.PermissionDenied) as e:
                call()
            assert isinstance(e.value, PermissionError), name
            assert isinstance(e.value, lse_client.LseError), name
            assert e.value.code == grpc.StatusCode.PERMISSION_DENIED, name
            assert "read-only" in str(e.value), name
        assert ro.get_problem_html(doc) == "<p>kept</p>"
        assert ro.get_test_case(doc, tc)["value"] == 1
        assert ro.get_stats()["records"] == records, "a refused write appended a record"


def test_a_token_is_checked_before_anything_is_sent():
    with pytest.raises(TypeError):
        LseClient("127.0.0.1:1", token=b"bytes-token")  # type: ignore[arg-type]
    for bad in ["", "has space", "tab\there", "caf\u00e9"]:
        with pytest.raises(ValueError):
            LseClient("127.0.0.1:1", token=bad)


def test_health_needs_no_token(token_server):
    # grpc.health.v1.Health/Check by hand: the request for the whole server
    # ("") encodes to no bytes, the answer SERVING (1) to field 1 = 1.
    with grpc.insecure_channel(token_server.address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda request: request,
            response_deserializer=lambda response: response,
        )
        assert check(b"", timeout=10) == b"\x08\x01"


# ---- TLS ----


def test_credentials_as_a_ca_path_speak_tls(tls_server, pki: Pki):
    for ca in (str(pki.ca), pki.ca):
        with LseClient(tls_server.address, credentials=ca) as lse:
            doc = lse.create_problem("<p>tls</p>")
            assert lse.get_problem_html(doc) == "<p>tls</p>"


def test_credentials_as_a_grpc_object_speak_tls(tls_server, pki: Pki):
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    with LseClient(tls_server.address, credentials=credentials) as lse:
        lse.wait_until_ready(timeout=10)
        assert lse.get_stats()["sync_policy"] == "always"


def test_a_plaintext_client_cannot_talk_to_a_tls_server(tls_server):
    with LseClient(tls_server.address, timeout=10) as lse:
        with pytest.raises(lse_client.Unavailable):
            lse.get_stats()


def test_a_client_trusting_another_ca_refuses_the_server(tls_server, tmp_path: Path):
    other = tmp_path / "other"
    other.mkdir()
    with LseClient(tls_server.address, credentials=make_pki(other).ca, timeout=10) as lse:
        with pytest.raises(lse_client.Unavailable):
            lse.get_stats()


def test_credentials_of_another_type_are_refused():
    with pytest.raises(TypeError, match="credentials"):
        LseClient("127.0.0.1:1", credentials=42)  # type: ignore[arg-type]


def test_tls_and_a_token_together(make_server, pki: Pki, token_file: Path):
    server = make_server(
        "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--token-file", str(token_file)
    )
    with LseClient(server.address, credentials=pki.ca, token=RW) as lse:
        doc = lse.create_problem("<p>both</p>")
    with LseClient(server.address, credentials=pki.ca, token=RO) as lse:
        assert lse.get_problem_html(doc) == "<p>both</p>"
        with pytest.raises(lse_client.PermissionDenied):
            lse.delete_problem(doc)
    with LseClient(server.address, credentials=pki.ca) as lse:
        with pytest.raises(lse_client.Unauthenticated):
            lse.get_problem_html(doc)


# ---- load shedding ----


def test_an_overloaded_server_raises_overloaded(make_server):
    """One call held in flight (its request stream never ends) fills a limit
    of 1; the next call is refused at once."""
    server = make_server("--max-concurrent-requests", "1")
    release = threading.Event()

    def requests() -> Iterator[lse_pb2.GetStatsRequest]:
        release.wait(30)
        yield lse_pb2.GetStatsRequest()

    channel = grpc.insecure_channel(server.address)
    get_stats = channel.stream_unary(
        "/lse.Lse/GetStats",
        request_serializer=lse_pb2.GetStatsRequest.SerializeToString,
        response_deserializer=lse_pb2.GetStatsResponse.FromString,
    )
    held = get_stats.future(requests(), timeout=60)
    try:
        with LseClient(server.address, timeout=10) as lse:
            error = None
            deadline = time.monotonic() + 20
            while error is None and time.monotonic() < deadline:
                if held.done():
                    # Refused itself: a probe had the one place when it
                    # arrived. Hold another.
                    held = get_stats.future(requests(), timeout=60)
                try:
                    lse.get_stats()
                except lse_client.Overloaded as e:
                    error = e
            assert error is not None, "no call was refused while one was held at a limit of 1"
            assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert not isinstance(error, lse_client.MessageTooLarge)
            release.set()
            assert held.result(timeout=30).sync_policy == "always"
            assert lse.get_stats()["sync_policy"] == "always"
    finally:
        release.set()
        channel.close()
