"""A record's commit says ``-dirty`` for uncommitted code, not for the results a run is writing."""

from __future__ import annotations

import subprocess

from netrazor.pipeline.records import git_commit


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_a_changed_record_leaves_the_commit_clean_and_changed_code_makes_it_dirty(tmp_path):
    _git(tmp_path, "init", "-q")
    for rel in ("src/code.py", "benchmarks/results/task/r.json", "benchmarks/RESULTS.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("a\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == sha
    (tmp_path / "benchmarks/results/task/r.json").write_text("b\n")  # an earlier seed's record, rewritten
    (tmp_path / "benchmarks/RESULTS.md").write_text("b\n")
    assert git_commit(tmp_path / "benchmarks") == sha  # from a subfolder too
    (tmp_path / "src/code.py").write_text("b\n")
    assert git_commit(tmp_path) == sha + "-dirty"
