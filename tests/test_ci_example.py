"""The GitHub Actions example is what users copy into their CI: it must pass
GitHub's workflow schema and zizmor's security audit."""
import subprocess
import sys
from pathlib import Path

WORKFLOW = Path(__file__).parents[1] / ".github" / "workflows" / "benchmarks.yml"
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True)


def test_workflow_matches_githubs_schema():
    done = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW))
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflow_passes_zizmor():
    done = run(str(BIN / "zizmor"), "--offline", "--min-severity", "low", str(WORKFLOW))
    assert done.returncode == 0, done.stdout + done.stderr


def test_zizmor_finds_what_the_example_avoids(tmp_path):
    """The audit is live: an unpinned action with persisted credentials is reported."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(WORKFLOW.read_text().replace("actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683",
                                                "actions/checkout@v4").replace("persist-credentials: false",
                                                                               "persist-credentials: true"))
    done = run(str(BIN / "zizmor"), "--offline", str(bad))
    assert done.returncode != 0 and "unpinned-uses" in done.stdout + done.stderr
