"""`genlab serve` on the command line: its defaults, its names for runs, its one-line errors."""

from __future__ import annotations

import pytest

from genlab.cli import main


@pytest.fixture()
def started(monkeypatch):
    """Capture what `genlab serve` would run instead of serving forever."""
    import uvicorn

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.update(app=app, **kwargs))
    return calls


def test_serve_binds_localhost_and_names_runs(served_runs, started, capsys):
    assert main(["serve", str(served_runs["gan"]), f"mine={served_runs['vae']}", "--port", "8123"]) == 0
    assert started["host"] == "127.0.0.1" and started["port"] == 8123
    assert set(started["app"].state.catalog) == {"gan", "mine"}
    assert "http://127.0.0.1:8123/" in capsys.readouterr().out


def test_serve_warns_when_binding_beyond_this_machine(served_runs, started, capsys):
    assert (
        main(["serve", str(served_runs["gan"]), "--host", "0.0.0.0", "--workers", "1", "--queue", "0"]) == 0
    )
    assert started["app"].state.pool.queue == 0
    assert "warning" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["serve"], "RUN"),
        (["serve", "{gan}", "--port", "70000"], "--port"),
        (["serve", "{gan}", "--workers", "0"], "positive"),
        (["serve", "{gan}", "{gan}"], "two runs are named 'gan'"),
        (["serve", "bad/name={gan}"], "run name"),
        (["serve", "{missing}"], "not found"),
        (["serve", "{data}"], "not a genlab run"),
    ],
)
def test_serve_errors_are_one_line(served_runs, started, capsys, tmp_path, argv, words):
    (tmp_path / "data").mkdir()
    paths = {"gan": served_runs["gan"], "missing": tmp_path / "missing", "data": tmp_path / "data"}
    assert main([arg.format(**paths) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err
    assert "app" not in started
