"""Servers listen on loopback only, and no secret given to a session reaches
anything it writes: results/, pytest-benchmark JSON, MLflow, telemetry."""
import json
import os
import secrets
from pathlib import Path

import pytest

#: The inner benchmark: after a run, while Airflow is up, every socket that
#: the session's process tree listens on, read from /proc/net.
BENCH = '''
import json, os
from pathlib import Path

LISTEN = "0A"


def tree(root):
    pids, found = {root}, True
    while found:
        found = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(stat.parent.name)
            if int(fields[1]) in pids and pid not in pids:
                pids.add(pid)
                found = True
    return pids


def socket_inodes(pid):
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def address(hex_ip):
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    return ":".join(b"".join(words)[i:i + 2].hex() for i in range(0, 16, 2))


def test_linear(mlpbench):
    mlpbench.run("linear")
    ours = set().union(*(socket_inodes(pid) for pid in tree(os.getpid())))
    listening = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            ip, port = fields[1].split(":")
            if fields[3] == LISTEN and fields[9] in ours:
                listening.append([address(ip), int(port, 16)])
    Path("listening.json").write_text(json.dumps(listening))
'''

LOOPBACK = {"127.0.0.1", "0000:0000:0000:0000:0000:0000:0000:0001"}


def test_servers_listen_on_loopback_and_no_secret_is_written(bench, postgres, monkeypatch):
    aws_secret, airflow_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAMLPBENCHTEST0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_secret)
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", airflow_secret)
    bench.tests(BENCH)
    result = bench.run("--mlpbench-arch=airflow-local", f"--mlpbench-airflow-db={postgres.url}",
                       "--mlpbench-scale=smoke", "--mlpbench-rounds=1", "--mlpbench-otel-file=otel.jsonl",
                       f"--mlpbench-mlflow-uri=sqlite:///{bench.path / 'mlflow.db'}", "--benchmark-autosave")
    result.assert_outcomes(passed=1)

    listening = json.loads((bench.path / "listening.json").read_text())
    assert listening, "Airflow's api-server listens while the session runs"
    assert all(ip in LOOPBACK for ip, _ in listening), listening

    written = [p for p in bench.path.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert {"bench.json", "runs.jsonl", "otel.jsonl", "mlflow.db"} <= {p.name for p in written}
    assert any(".benchmarks" in p.parts for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in (postgres.password, aws_secret, airflow_secret):
            assert secret.encode() not in data, f"a secret is in {path.relative_to(bench.path)}"
