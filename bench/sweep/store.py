"""Where an MLflow store is, checked without importing MLflow: what `advparams ui` needs before its server
starts (`bench.sweep.tracking` imports MLflow and torch, seconds on a loaded machine)."""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError

#: The comparison view's key: a link with ``?viewStateShareKey=KEY`` opens it, as the UI's own "Share" button
#: makes; the UI reads the view from the experiment tag ``mlflow.sharedViewState.KEY`` (`tracking.COMPARISON_VIEW`).
COMPARISON_VIEW_KEY = "advparams-comparison"
COMPARISON_VIEW_TAG = f"mlflow.sharedViewState.{COMPARISON_VIEW_KEY}"


def default_artifact_root(uri: str) -> str | None:
    """For a local SQLite store, artifacts go to a folder `mlartifacts` beside the database file
    (None: a tracking server decides, and proxies them)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None


SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def check_uri(uri: str, *, must_exist: bool = False) -> None:
    """One line for a tracking URI MLflow would refuse with a traceback (or create when only reading)."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""
    if scheme not in SCHEMES:
        raise BenchError(f"tracking URI {uri!r} is not supported; use sqlite:///FILE.db or http://HOST:PORT")
    if must_exist and is_new_store(uri):
        raise BenchError(f"no MLflow store at {uri.removeprefix('sqlite:///')}; run a sweep first")


def is_new_store(uri: str) -> bool:
    """Whether ``uri`` is a SQLite store whose file does not exist yet (opening it creates it)."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()
