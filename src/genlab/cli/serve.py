"""`genlab serve`: the web page and JSON API over trained runs, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import os
import sys

from ..errors import ConfigError
from .common import device, device_name, int_at_least, nonnegative_int, positive_int

port_number = int_at_least(0, "a port number 0..65535")


def register(commands) -> None:
    serve = commands.add_parser(
        "serve", help="a web page and JSON API over trained runs (pip install -e '.[serve]')"
    )
    serve.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories, or name=run_dir to rename one"
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    serve.add_argument("--port", type=port_number, default=8000)
    serve.add_argument("--workers", type=positive_int, default=2, help="inference threads")
    serve.add_argument(
        "--queue", type=nonnegative_int, default=32, help="requests that may wait; past it, 429"
    )
    serve.add_argument("--threads", type=positive_int, help="torch threads (default: spare cores / workers)")
    serve.add_argument("--device", type=device_name, default="cpu")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args) -> int:
    if args.port > 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    try:
        import uvicorn

        from ..serve import create_app, load_catalog, parse_run_arguments
    except ImportError as exc:
        raise ConfigError(
            f"genlab serve needs the serve extra ({exc.name} is missing): pip install -e '.[serve]'"
        ) from exc
    import torch

    named = parse_run_arguments(args.runs)
    # Inference threads leave a core to the event loop, so the page and 429s stay prompt under load.
    threads = args.threads or max(1, ((os.cpu_count() or 1) - 1) // args.workers)
    torch.set_num_threads(threads)
    catalog = load_catalog(named, device=device(args.device))
    app = create_app(catalog, workers=args.workers, queue=args.queue)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"genlab: warning: serving on {args.host}: anyone who can reach it can use these runs",
            file=sys.stderr,
        )
    print(f"genlab serve: {', '.join(catalog)} on http://{args.host}:{args.port}/ (API docs: /api/docs)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
