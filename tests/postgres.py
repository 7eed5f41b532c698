"""A throwaway PostgreSQL server from the system's packages (Debian:
``apt-get install postgresql``), on 127.0.0.1 and a free port, in a temporary
directory: for tests of the Airflow PostgreSQL path, and by hand:

    python tests/postgres.py     # prints a postgresql:// URL, stops on Enter or Ctrl-C
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


SERVER_USER = "postgres"  # the Debian package's system user; initdb refuses to run as root
INSTALL_HINT = "install the PostgreSQL server: apt-get install postgresql"


class PostgresUnavailable(Exception):
    pass


def find_bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise PostgresUnavailable(f"no PostgreSQL server under /usr/lib/postgresql/*/bin: {INSTALL_HINT}")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, database: str = "airflow", user: str = "mlpbench"):
        self.bin = find_bin_dir()
        self.database, self.user = database, user
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self.dir: Path | None = None
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(f"running as root and no {SERVER_USER!r} user: {INSTALL_HINT}") from None
            self.run_as = ["runuser", "-u", SERVER_USER, "--"]

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *cmd: str) -> None:
        result = subprocess.run([*self.run_as, *cmd], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}{result.stderr}")

    def start(self) -> "PostgresServer":
        self.dir = Path(tempfile.mkdtemp(prefix="mlpbench-pg-"))
        if self.run_as:
            shutil.chown(self.dir, SERVER_USER, SERVER_USER)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            shutil.chown(pwfile, SERVER_USER, SERVER_USER)
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", self.user, f"--pwfile={pwfile}",
                  "-A", "scram-sha-256", "-E", "UTF8", "--no-sync")
        self.port = free_port()
        # fsync off: a test database need not survive a crash.
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -F"
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")
        env_pw = {**os.environ, "PGPASSWORD": self.password}
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                        self.database], check=True, env=env_pw, capture_output=True, timeout=60)
        return self

    def stop(self) -> None:
        if self.dir is None:
            return
        data = self.dir / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run([*self.run_as, str(self.bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                            "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


if __name__ == "__main__":
    pg = PostgresServer().start()
    try:
        print(pg.url, flush=True)
        sys.stdin.readline()
    except KeyboardInterrupt:
        pass
    finally:
        pg.stop()
