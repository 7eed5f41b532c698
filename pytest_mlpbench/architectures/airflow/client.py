"""A small client of Airflow 3's REST API (``/api/v2``) with a JWT from the
simple auth manager's token endpoint."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any


class AirflowError(Exception):
    """Airflow refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AirflowClient:
    def __init__(self, url: str, username: str, password: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self.token: str | None = None

    def login(self) -> str:
        body = {"username": self.username, "password": self.password}
        self.token = self.request("POST", "/auth/token", body, auth=False)["access_token"]
        return self.token

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                query: dict | None = None, timeout_s: float | None = None) -> Any:
        url = self.url + path + (f"?{urllib.parse.urlencode(query, doseq=True)}" if query else "")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token or self.login()}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise AirflowError(f"{method} {path}: HTTP {exc.code}: {detail}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise AirflowError(f"{method} {path}: {exc}") from None
        return json.loads(text) if text else None

    def api(self, method: str, path: str, body: Any = None, **query) -> Any:
        """A call to ``/api/v2``; an expired token is renewed once."""
        try:
            return self.request(method, "/api/v2" + path, body, query=query or None)
        except AirflowError as exc:
            if exc.status != 401:
                raise
            self.login()
            return self.request(method, "/api/v2" + path, body, query=query or None)

    def health(self) -> dict:
        # A probe, asked again when slow: a short timeout lets the caller check the processes in between.
        return self.request("GET", "/api/v2/monitor/health", auth=False, timeout_s=10)

    def dag(self, dag_id: str) -> dict | None:
        try:
            return self.api("GET", f"/dags/{dag_id}")
        except AirflowError as exc:
            if exc.status == 404:
                return None
            raise

    def import_errors(self, filename: str) -> list[str]:
        found = self.api("GET", "/importErrors", limit=100)["import_errors"]
        return [e["stack_trace"] for e in found if e.get("filename", "").endswith(filename)]

    def trigger(self, dag_id: str, run_id: str, conf: dict) -> dict:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", body)

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def set_dag_run_state(self, dag_id: str, run_id: str, state: str) -> dict:
        return self.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", {"state": state})

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=1000)["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value"):
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api("GET", path, map_index=map_index, deserialize="true")["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        content = self.api("GET", path, map_index=map_index, full_content="true").get("content") or []
        return "\n".join(_log_line(item) for item in content)


def _log_line(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    line = f"{item.get('timestamp', '')} {item.get('level', '')} {item.get('event', '')}".strip()
    if item.get("signal_name"):  # a task process that was killed: which signal
        line += f" ({item['signal_name']})"
    for error in item.get("error_detail") or []:
        frames = error.get("frames") or []
        where = " <- ".join(f"{f.get('filename')}:{f.get('lineno')}" for f in frames[-3:])
        line += f"\n  {error.get('exc_type')}: {error.get('exc_value')} ({where})"
    return line


def timestamp_ns(value: str | None) -> int | None:
    """An API timestamp (ISO 8601 with zone) as wall-clock ns since the epoch."""
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
