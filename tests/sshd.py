"""A throwaway OpenSSH server from the system's packages (Debian:
``apt-get install openssh-server``), on 127.0.0.1 and a free port, in a
temporary directory with its own host key and a client key that may log in
as the current user: for tests of remote pytest-xdist workers
(``--tx ssh=...``), and by hand:

    python tests/sshd.py     # prints an ssh command line, stops on Enter or Ctrl-C
"""
from __future__ import annotations

import ctypes
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_mlpbench.architectures.airflow.server import stop_groups

SSHD = Path("/usr/sbin/sshd")  # sshd re-executes itself, so it wants an absolute path
INSTALL_HINT = "install the OpenSSH server: apt-get install openssh-server"
PRIVSEP_DIR = Path("/run/sshd")  # Debian's privilege separation directory; sshd started as root needs it


class SshdUnavailable(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """``preexec_fn``: sshd gets SIGTERM when the process that started it ends,
    also when that process is killed and cannot stop it (Linux's PR_SET_PDEATHSIG)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class SshServer:
    def __init__(self):
        if not os.access(SSHD, os.X_OK):
            raise SshdUnavailable(f"no {SSHD}: {INSTALL_HINT}")
        missing = [tool for tool in ("ssh", "ssh-keygen") if shutil.which(tool) is None]
        if missing:
            raise SshdUnavailable(f"no {' or '.join(missing)} on PATH: install the OpenSSH client: "
                                  "apt-get install openssh-client")
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.host = "127.0.0.1"
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None  # sshd's output (-e: its log), in the temporary directory

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    @property
    def client_key(self) -> Path:
        assert self.dir is not None
        return self.dir / "client_ed25519"

    @property
    def ssh_options(self) -> list[str]:
        """Options of the ``ssh`` command that log in here without a question
        or a known_hosts entry (one word each, as execnet's ``ssh=`` splits them)."""
        return ["-p", str(self.port), "-i", str(self.client_key), "-o", "IdentitiesOnly=yes",
                "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]

    @property
    def xdist_ssh(self) -> str:
        """The value of execnet's ``ssh=`` gateway key (``--tx ssh=VALUE//python=...``)."""
        words = [*self.ssh_options, self.destination]
        if any(not w or any(c.isspace() for c in w) or "//" in w for w in words):  # execnet splits on white space
            raise RuntimeError(f"the ssh options do not fit in an execnet spec: {words}")
        return " ".join(words)

    def ssh(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``command`` over ssh (its words quoted for the remote shell)."""
        return subprocess.run(["ssh", *self.ssh_options, self.destination, shlex.join(command)], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self) -> "SshServer":
        self.dir = Path(tempfile.mkdtemp(prefix="sshtest-sshd-"))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        assert self.dir is not None
        host_key = self.dir / "host_ed25519"
        for key in (host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlpbench-test", "-f", str(key)],
                           check=True, capture_output=True, timeout=60)
        authorized = self.dir / "authorized_keys"
        shutil.copyfile(self.client_key.with_suffix(".pub"), authorized)
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self.port = free_port()
        config = self.dir / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {host_key}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            f"AllowUsers {self.user}",
            "PermitRootLogin prohibit-password",  # the tests may run as root: keys only
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the temporary directory's modes are not sshd's business
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "LogLevel INFO",
        ]) + "\n")
        self.log = self.dir / "sshd.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not answer on {self.host}:{self.port} within 30 s:\n"
                                   f"{self.log.read_text()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        """Whether the server sends its SSH banner."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop sshd and whatever runs under it: its connections' processes, the
        logged-in sessions and their children (a connection's sshd leaves the
        server's process group, so they are found by parentage)."""
        if self.proc is not None:
            stop_groups([self.proc], grace_s=5)
            self.proc.wait(timeout=5)
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


if __name__ == "__main__":
    server = SshServer().start()
    try:
        print(shlex.join(["ssh", *server.ssh_options, server.destination]), flush=True)
        sys.stdin.readline()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
