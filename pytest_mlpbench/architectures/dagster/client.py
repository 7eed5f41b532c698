"""The GraphQL API of ``dagster-webserver``, over urllib: how a user's script
launches, watches, terminates and reads runs, and reloads a code location.
Light to import: no Dagster in the test process."""
from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request

FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""

STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } ... on Error { message } }
}"""

EVENTS = """
query Events($runId: ID!, $after: String) {
  logsForRun(runId: $runId, afterCursor: $after, limit: 1000) {
    __typename
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on MessageEvent { eventType stepKey timestamp message }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { runFailureError: error { message } }
      }
    }
    ... on Error { message }
  }
}"""

TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) { __typename ... on Error { message } }
}"""

RELOAD = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) { __typename ... on Error { message } }
}"""

LOCATION = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name pipelines { name } } }
          ... on PythonError { message }
        }
      }
    }
  }
}"""

DAEMONS = """
query Daemons { instance { daemonHealth { allDaemonStatuses { daemonType required healthy lastHeartbeatTime } } } }
"""


class DagsterError(Exception):
    """A failed GraphQL call; ``status`` is the HTTP status, or None where none came (not up, too slow)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class DagsterClient:
    def __init__(self, url: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, text: str, **variables) -> dict:
        body = json.dumps({"query": text, "variables": variables}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise DagsterError(f"HTTP {exc.code}: {exc.read()[:500]!r}", exc.code) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise DagsterError(f"{type(exc).__name__}: {exc}") from None
        if answer.get("errors"):
            raise DagsterError("; ".join(e.get("message", "") for e in answer["errors"]), 200)
        return answer["data"]

    def launch(self, location: str, repository: str, job: str, run_config: dict, tags: dict[str, str]) -> str:
        params = {"selector": {"repositoryLocationName": location, "repositoryName": repository, "jobName": job},
                  "runConfigData": run_config,
                  "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}}
        result = self.query(LAUNCH, params=params)["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            errors = [e["message"] for e in result.get("errors", [])] or [result.get("message", "")]
            raise DagsterError(f"{result['__typename']}: {'; '.join(errors)}", 200)
        return result["run"]["runId"]

    def status(self, run_id: str) -> str:
        result = self.query(STATUS, runId=run_id)["runOrError"]
        if result["__typename"] != "Run":
            raise DagsterError(f"{result['__typename']}: {result.get('message')}", 200)
        return result["status"]

    def events(self, run_id: str) -> list[dict]:
        """Every event of the run's event log, in order."""
        found, cursor = [], None
        while True:
            page = self.query(EVENTS, runId=run_id, after=cursor)["logsForRun"]
            if page["__typename"] != "EventConnection":
                raise DagsterError(f"{page['__typename']}: {page.get('message')}", 200)
            found += page["events"]
            cursor = page["cursor"]
            if not page["hasMore"]:
                return found

    def terminate(self, run_id: str) -> None:
        self.query(TERMINATE, runId=run_id)

    def reload(self, location: str) -> None:
        """Have the code location's server load its code again (see :meth:`location` for the result)."""
        entry = self.query(RELOAD, name=location)["reloadRepositoryLocation"]
        if entry["__typename"] != "WorkspaceLocationEntry":
            raise DagsterError(f"{entry['__typename']}: {entry.get('message')}", 200)

    def location(self, name: str) -> dict | None:
        """The code location's load status and its jobs or load error, None if not listed yet."""
        workspace = self.query(LOCATION)["workspaceOrError"]
        for entry in workspace.get("locationEntries", []):
            if entry["name"] == name:
                return entry
        return None

    def daemons(self) -> dict[str, dict]:
        statuses = self.query(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
        return {s["daemonType"]: s for s in statuses}


def jobs_of(location: dict) -> set[str]:
    """The job names of a ``RepositoryLocation`` (``locationOrLoadError``)."""
    return {job["name"] for repo in location.get("repositories", []) for job in repo["pipelines"]}


def timestamp_ns(event: dict) -> int:
    """An event's time: GraphQL gives milliseconds since the epoch, as a string."""
    return int(float(event["timestamp"]) * 1_000_000)
