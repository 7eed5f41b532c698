"""A small client of the Prefect 3 server's REST API (``/api``), with the basic
auth string the session's server requires. Stdlib only: Prefect itself lives in
its own virtual environment (see docs/prefect.md)."""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

RETRY_STATUS = (429, 502, 503)
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)


class PrefectError(Exception):
    """The Prefect server refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class PrefectClient:
    def __init__(self, url: str, auth_string: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.auth = "Basic " + base64.b64encode(auth_string.encode()).decode()
        self.timeout_s = timeout_s

    def api(self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None) -> Any:
        """A call to ``/api``. Like Prefect's own client, answers 429, 502 and 503 (SQLite busy
        under load) are retried with back-off."""
        for delay in RETRY_DELAYS_S:
            try:
                return self._request(method, path, body, timeout_s)
            except PrefectError as exc:
                if exc.status not in RETRY_STATUS:
                    raise
            time.sleep(delay)
        return self._request(method, path, body, timeout_s)

    def _request(self, method: str, path: str, body: Any, timeout_s: float | None) -> Any:
        headers = {"Accept": "application/json", "Authorization": self.auth}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise PrefectError(f"{method} {path}: HTTP {exc.code}: {detail}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise PrefectError(f"{method} {path}: {exc}") from None
        return json.loads(text) if text else None

    def healthy(self) -> bool:
        try:
            return self.api("GET", "/health", timeout_s=5) is True
        except PrefectError:
            return False

    def deployment(self, flow_name: str, name: str) -> dict | None:
        try:
            return self.api("GET", f"/deployments/name/{flow_name}/{name}")
        except PrefectError as exc:
            if exc.status == 404:
                return None
            raise

    def create_flow_run(self, deployment_id: str, name: str, parameters: dict) -> dict:
        """What ``prefect.deployments.run_deployment`` asks the server for; ``name`` (the run id)
        is its idempotency key, so a retried request makes no second flow run."""
        return self.api("POST", f"/deployments/{deployment_id}/create_flow_run",
                        {"name": name, "parameters": parameters, "idempotency_key": name})

    def flow_run(self, flow_run_id: str) -> dict:
        return self.api("GET", f"/flow_runs/{flow_run_id}")

    def set_flow_run_state(self, flow_run_id: str, state_type: str, message: str) -> None:
        self.api("POST", f"/flow_runs/{flow_run_id}/set_state",
                 {"state": {"type": state_type, "message": message}, "force": True})

    def task_runs(self, flow_run_id: str) -> list[dict]:
        return self.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})

    def task_run_states(self, task_run_id: str) -> list[dict]:
        return self.api("GET", f"/task_run_states/?task_run_id={task_run_id}")

    def flow_run_logs(self, flow_run_id: str, limit: int = 200) -> list[dict]:
        return self.api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                 "sort": "TIMESTAMP_ASC", "limit": limit})


def timestamp_ns(text: str | None) -> int | None:
    """Prefect's ISO 8601 timestamps (UTC, microseconds) as wall-clock ns."""
    if not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
