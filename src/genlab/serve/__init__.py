"""`genlab serve`: a web page and a JSON API over trained runs (needs the `serve` extra: FastAPI, uvicorn).

from genlab.serve import create_app, load_catalog
app = create_app(load_catalog({"gan": Path("runs/gan")}))
"""

from __future__ import annotations

from .app import create_app
from .catalog import load_catalog, parse_run_arguments

__all__ = ["create_app", "load_catalog", "parse_run_arguments"]
