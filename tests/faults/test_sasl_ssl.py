"""SCRAM-SHA-512 over TLS: the worker connects with settings alone; wrong credentials fail fast and clearly.

A broker of the module's own gets a SASL_SSL listener (``local.SaslSslListener``) with a server
certificate signed by a CA the test makes with the ``openssl`` command (valid for 127.0.0.1), and one
SCRAM user created when its storage is formatted. The worker gets nothing but ``STREAMER_KAFKA_*``
settings (bootstrap = the SASL_SSL listener, protocol, mechanism, user, password, CA file). With the right
password it triages tickets; with a wrong one it must exit non-zero within ``FAIL_FAST_S`` with a one-line
error naming the address, and the password must appear nowhere in what it printed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiokafka.helpers import create_ssl_context
from harness.brokers import own_broker
from harness.fixtures import WorkerFactory
from harness.kafka import Topics, create_topics
from harness.processes import free_port, run_streamer

from streamer.demo import demo_tickets
from streamer.kafka import local

from .conftest import ENRICHED, FAUST_ENV, REPO, TICKETS, WORKER_ENV, Tally, report

pytestmark = [
    pytest.mark.faults,
    pytest.mark.kafka,
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test CA"),
]

USER = "triage-worker"
PASSWORD = "Tr1age-s3cret-" + uuid.uuid4().hex[:12]
WRONG_PASSWORD = "wr0ng-" + uuid.uuid4().hex[:12]
FAIL_FAST_S = 45.0


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(where: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a broker certificate for 127.0.0.1/localhost: (ca.pem, broker.pem, broker.key)."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "broker.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=streamer fault-suite CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=where,
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", "/CN=localhost", cwd=where,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.pem", "-days", "2", "-extfile", "broker.ext", cwd=where,
    )  # fmt: skip
    return where / "ca.pem", where / "broker.pem", where / "broker.key"


@dataclass
class SecureBroker:
    broker: local.Broker
    ca: Path
    startup_s: float

    @property
    def address(self) -> str:
        address = self.broker.sasl_ssl_bootstrap_servers
        assert address is not None
        return address

    def env(self, password: str) -> dict[str, str]:
        return {
            "STREAMER_KAFKA_BOOTSTRAP": self.address,
            "STREAMER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMER_KAFKA_SASL_USERNAME": USER,
            "STREAMER_KAFKA_SASL_PASSWORD": password,
            "STREAMER_KAFKA_SSL_CAFILE": str(self.ca),
        }

    def cluster(self) -> Topics:
        # Topics go through the secured listener with the project's own settings.
        settings = {k.removeprefix("STREAMER_").lower(): v for k, v in self.env(PASSWORD).items()}
        del settings["kafka_bootstrap"]
        client = {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": USER,
            "sasl_plain_password": PASSWORD,
            "ssl_context": create_ssl_context(cafile=str(self.ca)),
        }
        return create_topics(self.address, "faults.sasl", client=client, **settings)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("sasl")
    ca, chain, key = make_certificates(root / "tls")
    listener = local.SaslSslListener(free_port(), chain, key, {USER: PASSWORD})
    began = time.monotonic()
    with own_broker(root / "kafka", sasl_ssl=listener) as broker:
        yield SecureBroker(broker, ca, time.monotonic() - began)


def test_worker_triages_over_sasl_ssl_with_settings_only(
    secure_broker: SecureBroker, worker_factory: WorkerFactory
) -> None:
    cluster = secure_broker.cluster()
    run = uuid.uuid4().hex[:6]
    tickets = list(demo_tickets(20, seed=17))
    for i, t in enumerate(tickets):
        t["id"] = f"{t['id']}-{run}-{i}"
    ids = {t["id"].encode() for t in tickets}
    env = {**FAUST_ENV, **WORKER_ENV, **secure_broker.env(PASSWORD)}
    worker = worker_factory(cluster, name="sasl", group=f"faults-sasl-{run}", env=env, start=False)
    with Tally(cluster, [ENRICHED]) as tally:
        began = time.monotonic()
        worker.start()
        cluster.produce(TICKETS, ((t["id"].encode(), orjson.dumps(t)) for t in tickets))
        tally.wait(lambda: tally.covered(ids) == len(ids), 300, alive=[worker], what="enriched tickets over SASL_SSL")
        first_s = time.monotonic() - began
        code = worker.terminate()
    output = worker.log_text()
    report(
        "SASL_SSL (SCRAM-SHA-512 over TLS): right credentials",
        {
            "broker with SASL_SSL listener": f"{secure_broker.address}, started in {secure_broker.startup_s:.1f} s",
            "tickets enriched": f"{len(ids)} in {first_s:.1f} s from the worker's start",
            "password in the worker's output": PASSWORD in output,
            "worker exit": code,
        },
    )
    assert PASSWORD not in output
    assert code == 0


@pytest.mark.parametrize("wrong", ["password", "ca"])
def test_wrong_credentials_fail_fast_with_one_clear_line(
    wrong: str, secure_broker: SecureBroker, test_bundle: Path, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "STREAMER_BUNDLE_DIR": str(test_bundle),
        "STREAMER_TOPICS_DIR": str(REPO / "topics"),
        "STREAMER_METRICS_PORT": "0",
        "STREAMER_LOG_FORMAT": "json",
        **secure_broker.env(WRONG_PASSWORD if wrong == "password" else PASSWORD),
    }
    if wrong == "ca":  # a CA that did not sign the broker's certificate
        other_ca, _, _ = make_certificates(tmp_path / "other")
        env["STREAMER_KAFKA_SSL_CAFILE"] = str(other_ca)
    began = time.monotonic()
    try:
        done = run_streamer("worker", "--only", "tickets", env=env, inherit_env=False, timeout=FAIL_FAST_S + 30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"worker did not give up within {FAIL_FAST_S + 30:.0f} s: {exc.stderr!r}") from None
    took = time.monotonic() - began
    err = done.stderr
    lines = [line for line in err.splitlines() if line.startswith("streamer: error:")]
    report(
        f"SASL_SSL: wrong {wrong}",
        {
            "exit code": done.returncode,
            "took": f"{took:.1f} s (limit {FAIL_FAST_S:.0f} s)",
            "error line": lines[-1] if lines else err.strip().splitlines()[-1:],
            "stderr lines": len(err.splitlines()),
            "password in stdout/stderr": WRONG_PASSWORD in err + done.stdout,
        },
    )
    assert done.returncode == 2, err[-3000:]
    assert took <= FAIL_FAST_S
    assert len(lines) == 1, err[-3000:]
    assert secure_broker.address in lines[0]
    assert ("authentication failed" if wrong == "password" else "certificate not trusted") in lines[0]
    assert "Traceback" not in err
    assert WRONG_PASSWORD not in err + done.stdout
    assert PASSWORD not in err + done.stdout
