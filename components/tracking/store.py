"""Where MLflow keeps the runs: tracking URIs, the store behind one, links into its UI.

The tracking URI is the configured one (``tracking.uri`` of params.yaml), else
``$MLFLOW_TRACKING_URI``, else a project-local SQLite database
``sqlite:///<project>/mlflow.db`` (recent MLflow refuses a bare ``mlruns/`` file store).
Artifacts of a SQLite store live beside its database, with or without a server.

Opening a store is separate from writing to it (:mod:`.runs`) and reading it
(:mod:`.reads`): a store that is not there is reported, never created by a read.
MLflow is imported inside the functions that need it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from components.errors import EarshotError
from components.io import project_root


class TrackingError(EarshotError):
    """The tracking store, or the runs asked for in it, cannot be found."""


def local_tracking_uri(root: Path | None = None) -> str:
    """The project's own SQLite store, used when nothing else is configured."""
    return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None, root: Path | None = None) -> str:
    """``uri`` when one is configured, else ``$MLFLOW_TRACKING_URI``, else the project's store."""
    if uri:
        return uri
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    return local_tracking_uri(root)


def server_backend_uri(uri: str | None, root: Path) -> str:
    """The database an MLflow server serves: the configured ``uri`` when it names a
    database, else the project's ``mlflow.db``; never ``$MLFLOW_TRACKING_URI``, which may
    well point at the server being started."""
    if uri and "://" in uri and not uri.startswith(("http://", "https://", "databricks")):
        return uri
    return local_tracking_uri(root)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (relative ones to the cwd);
    None for any other store."""
    return Path(unquote(uri.removeprefix("sqlite:///"))) if uri.startswith("sqlite:///") else None


def sqlite_missing(uri: str) -> bool:
    """A SQLite store whose database file does not exist yet (opening it would create it)."""
    return (db := sqlite_path(uri)) is not None and not db.exists()


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside its database (``<db folder>/mlartifacts``);
    a tracking server decides for itself (None)."""
    db = sqlite_path(uri)
    return (db.parent / "mlartifacts").resolve().as_uri() if db is not None else None


def check_store(uri: str) -> None:
    """Fail with the URI in the message when there is no tracking store to read.

    MLflow would silently create an empty SQLite database (and then report "no runs"),
    or retry an unreachable server for minutes; both hide the real mistake.
    """
    parsed = urlparse(uri)
    if (path := sqlite_path(uri)) is not None:
        if not path.is_file():
            raise TrackingError(f"no MLflow tracking database at {path} (tracking URI {uri}); run a sweep first "
                                "(`earshot flow ablation NAME`) or set MLFLOW_TRACKING_URI / tracking.uri")
    elif parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path))
        if not path.is_dir():
            raise TrackingError(f"no MLflow file store at {path} (tracking URI {uri})")
    elif parsed.scheme in ("http", "https"):
        import requests

        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise TrackingError(f"the MLflow tracking server {uri} does not answer ({exc.__class__.__name__}); "
                                "start it with `earshot server up` or set MLFLOW_TRACKING_URI") from None


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def open_existing_store(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri`` with its store opened (a first query made), or None
    for a SQLite file that does not exist yet: searching would create it."""
    if sqlite_missing(uri):
        return None
    client = open_client(uri)
    client.search_experiments(max_results=1)
    return client


def use_experiment(name: str, uri: str) -> str:
    """Point MLflow at the store ``uri`` and the experiment ``name`` (created with its
    artifacts beside a SQLite store); returns the experiment id."""
    import mlflow

    # Quiet the per-process MLflow banner and the hub lookups of optional integrations.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_location(uri))
    return mlflow.set_experiment(name).experiment_id


def ui_base(tracking_uri: str, server_url: str | None = None) -> str:
    """Where MLflow run pages live: the tracking server's URL when there is one (an
    ``http(s)`` tracking URI, or a server serving the same store), else the URI itself
    (a SQLite store has no UI of its own; the link still names the store and the run)."""
    return (server_url or tracking_uri).rstrip("/")


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """The page of one run in the MLflow UI at ``base``."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
