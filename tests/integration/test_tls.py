"""TLS with TorchServe's keys, checked with real TLS clients: ``requests`` and ``curl`` trusting
a test CA made here with ``cryptography``, and a gRPC secure channel.  Wrong key material stops
the start with a message that says what is wrong."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tsf.testing import ServerProcess, assert_error

pytestmark = pytest.mark.slow

KEYSTORE_PASS = "s3cret pass"


def _key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(subject_key, subject: str, issuer_key, issuer: str, ca: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A test CA, a server key and certificate for 127.0.0.1 signed by it, the same in a PKCS12
    keystore, and wrong material: another key, an encrypted key, a file that is no key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    folder = tmp_path_factory.mktemp("pki")
    ca_key, server_key = _key(), _key()
    ca = _cert(ca_key, "tsf test CA", ca_key, "tsf test CA", ca=True)
    server = _cert(server_key, "127.0.0.1", ca_key, "tsf test CA", ca=False)

    def pem_key(key, password: bytes | None = None) -> bytes:
        encryption = serialization.BestAvailableEncryption(password) if password else \
            serialization.NoEncryption()
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL, encryption)

    files = {"ca": ca.public_bytes(serialization.Encoding.PEM),
             "cert": server.public_bytes(serialization.Encoding.PEM),
             "key": pem_key(server_key), "other_key": pem_key(_key()),
             "encrypted_key": pem_key(server_key, b"pw"), "not_a_key": b"hello\n",
             "keystore": pkcs12.serialize_key_and_certificates(
                 b"tsf", server_key, server, [ca],
                 serialization.BestAvailableEncryption(KEYSTORE_PASS.encode()))}
    paths = {}
    for name, data in files.items():
        paths[name] = folder / (name + (".p12" if name == "keystore" else ".pem"))
        paths[name].write_bytes(data)
    return paths


def start(tmp_path: Path, lines: list[str], model_store=None, models=None) -> ServerProcess:
    config = tmp_path / "config.properties"
    config.write_text("\n".join(lines) + "\n")
    args = ["--ts-config", str(config)]
    if model_store is not None:
        args += ["--model-store", str(model_store), "--models", *models]
    return ServerProcess(args=args)


@pytest.fixture(scope="module")
def pem_server(pki, model_store, tmp_path_factory):
    """HTTPS inference and management, plain HTTP metrics, gRPC with TLS: PEM key and cert."""
    server = start(tmp_path_factory.mktemp("tls"), [
        "inference_address=https://127.0.0.1:0", "management_address=https://127.0.0.1:0",
        "metrics_address=http://127.0.0.1:0", f"private_key_file={pki['key']}",
        f"certificate_file={pki['cert']}", "enable_grpc=true", "enable_grpc_ssl=true",
        "grpc_inference_address=127.0.0.1:0", "grpc_management_address=127.0.0.1:0"],
        model_store, ["echo=echo.mar"])
    try:
        for _ in range(600):
            if requests.get(server.inference + "/ping", verify=pki["ca"], timeout=5).ok:
                break
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


def test_https_listeners_answer_clients_that_trust_the_ca(pem_server, pki):
    assert pem_server.inference.startswith("https://")
    assert pem_server.management.startswith("https://")
    assert pem_server.metrics.startswith("http://")
    ping = requests.get(pem_server.inference + "/ping", verify=pki["ca"], timeout=10)
    assert ping.json() == {"status": "Healthy"}
    answer = requests.post(pem_server.inference + "/predictions/echo", json=[1, 2],
                           verify=pki["ca"], timeout=30)
    assert answer.status_code == 200 and answer.json()["echo"] == [1, 2]
    listed = requests.get(pem_server.management + "/models", verify=pki["ca"], timeout=10)
    assert [m["modelName"] for m in listed.json()["models"]] == ["echo"]
    assert_error(requests.get(pem_server.management + "/models/nope", verify=pki["ca"],
                              timeout=10), 404)
    assert "ts_inference_requests_total" in requests.get(pem_server.metrics + "/metrics",
                                                         timeout=10).text


def test_clients_without_the_ca_and_plaintext_are_refused(pem_server, pki):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(pem_server.inference + "/ping", timeout=10)  # the system's CAs only
    plain = pem_server.inference.replace("https://", "http://")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(plain + "/ping", timeout=10)
    assert requests.get(pem_server.inference + "/ping", verify=pki["ca"], timeout=10).ok


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_cacert(pem_server, pki):
    run = subprocess.run(["curl", "-sS", "--cacert", str(pki["ca"]),
                          pem_server.inference + "/ping"], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"status": "Healthy"}
    refused = subprocess.run(["curl", "-sS", pem_server.inference + "/ping"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0  # curl's own CAs do not know the test CA


# A client process of its own: this one may already hold TorchServe's own stubs of the same
# proto package (test_grpc_torchserve.py), and one descriptor pool takes a package only once.
GRPC_TLS_CLIENT = """
import json, sys
import grpc
from google.protobuf.empty_pb2 import Empty
from tsf.grpc_api.stubs import load

target, ca = sys.argv[1], sys.argv[2]
stubs = load()
pb, pb_grpc = stubs["tsf_torchserve_inference_pb2"], stubs["tsf_torchserve_inference_pb2_grpc"]
out = {}
credentials = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
with grpc.secure_channel(target, credentials) as channel:
    stub = pb_grpc.InferenceAPIsServiceStub(channel)
    out["health"] = json.loads(stub.Ping(Empty(), timeout=30).health)
    answer = stub.Predictions(pb.PredictionsRequest(model_name="echo", input={"body": b"[3]"}),
                              timeout=30)
    out["prediction"] = json.loads(answer.prediction)
with grpc.insecure_channel(target) as channel:  # plaintext gets nothing
    try:
        pb_grpc.InferenceAPIsServiceStub(channel).Ping(Empty(), timeout=5)
        out["plaintext"] = "answered"
    except grpc.RpcError as exc:
        out["plaintext"] = exc.code().name
print(json.dumps(out))
"""


def test_grpc_secure_channel(pem_server, pki):
    pytest.importorskip("grpc")
    run = subprocess.run([sys.executable, "-c", GRPC_TLS_CLIENT, pem_server.urls["grpc_inference"],
                          str(pki["ca"])], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["health"]["status"] == "Healthy"
    assert out["prediction"]["echo"] == "[3]"
    assert out["plaintext"] != "answered"


def test_pkcs12_keystore(pki, tmp_path):
    server = start(tmp_path, ["inference_address=https://127.0.0.1:0",
                              "management_address=http://127.0.0.1:0",
                              "metrics_address=http://127.0.0.1:0",
                              f"keystore={pki['keystore']}", f"keystore_pass={KEYSTORE_PASS}",
                              "keystore_type=PKCS12"])
    try:
        ping = requests.get(server.inference + "/ping", verify=pki["ca"], timeout=10)
        assert ping.json() == {"status": "Healthy"}
        assert f"TLS from keystore {pki['keystore']}" in server.log()
    finally:
        server.stop()


def test_https_without_key_material_serves_a_self_signed_certificate(tmp_path):
    server = start(tmp_path, ["inference_address=https://127.0.0.1:0",
                              "management_address=http://127.0.0.1:0",
                              "metrics_address=http://127.0.0.1:0"])
    try:
        assert requests.get(server.inference + "/ping", verify=False, timeout=10).ok
        assert "self-signed certificate made at start" in server.log()
    finally:
        server.stop()


def _serve(tmp_path: Path, lines: list[str]) -> subprocess.CompletedProcess:
    config = tmp_path / "bad.properties"
    config.write_text("\n".join(["management_address=http://127.0.0.1:0",
                                 "metrics_address=http://127.0.0.1:0", *lines]) + "\n")
    return subprocess.run([sys.executable, "-m", "tsf.cli", "serve", "--ts-config", str(config),
                           "--workspace", str(tmp_path / "ws")],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name, lines, message", [
    ("wrong keystore password", ["keystore={keystore}", "keystore_pass=wrong"],
     "wrong keystore_pass, or not a PKCS12 file"),
    ("JKS keystore", ["keystore={keystore}", f"keystore_pass={KEYSTORE_PASS}",
                      "keystore_type=JKS"], "keystore_type JKS is not supported"),
    ("key of another certificate", ["private_key_file={other_key}", "certificate_file={cert}"],
     "the private key does not belong to the certificate"),
    ("not a key", ["private_key_file={not_a_key}", "certificate_file={cert}"],
     "not a PEM private key"),
    ("encrypted key", ["private_key_file={encrypted_key}", "certificate_file={cert}"],
     "the key is encrypted"),
    ("missing file", ["private_key_file={key}.gone", "certificate_file={cert}"],
     "cannot be read"),
    ("certificate alone", ["certificate_file={cert}"],
     "needs both private_key_file and certificate_file"),
    ("gRPC TLS without keys", ["inference_address=http://127.0.0.1:0", "enable_grpc=true",
                               "enable_grpc_ssl=true"], "enable_grpc_ssl=true needs"),
])
def test_wrong_key_material_stops_the_start_with_a_clear_message(pki, tmp_path, name, lines,
                                                                 message):
    lines = [line.format(**pki) for line in lines]
    if not any(line.startswith("inference_address") for line in lines):
        lines.append("inference_address=https://127.0.0.1:0")
    run = _serve(tmp_path, lines)
    assert run.returncode == 2, (name, run.returncode, run.stderr[-2000:])
    assert message in run.stderr, (name, run.stderr[-2000:])
