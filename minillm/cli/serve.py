"""``minillm serve``: the OpenAI-compatible HTTP server (:mod:`minillm.serve.app`)."""

from __future__ import annotations

import argparse
import errno
import socket

from minillm.cli.entry import checked_number
from minillm.cli.evaluate import load_for_eval
from minillm.course import course_model
from minillm.serve.app import create_app
from minillm.serve.monitor import DriftMonitor


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or one clear error (busy port, bad address).

    Bound before anything is printed or loaded into the server, so "serving on" is only ever
    said about a port that is really ours.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as err:
        raise ValueError(f"--host {host!r} is not an address this machine has ({err})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        why = "is in use by another program" if err.errno == errno.EADDRINUSE else err.strerror
        raise ValueError(
            f"cannot listen on {host}:{port}: the port {why}; choose another with --port "
            "(1024-65535, or 0 for any free port)"
        ) from None
    return sock


def _serve_cli(args: argparse.Namespace) -> int:
    sock = bind(args.host, args.port)  # first: a busy port costs nothing and prints no banner
    try:
        if args.checkpoint is None:
            model, tokenizer = course_model(args.model, verbose=True)
        else:  # the loader every command shares: verified file, its own tokenizer (fingerprint)
            model, tokenizer = load_for_eval(args.checkpoint, args.tokenizer)
        import uvicorn

        monitor = None
        if args.drift_monitor:
            monitor = DriftMonitor.for_course(model, tokenizer, window=args.drift_window)
            print(f"drift monitor: window {monitor.window}, KS threshold {monitor.threshold:.3f}")
        app = create_app(
            model,
            tokenizer,
            model_name=args.model_name,
            n_slots=args.slots,
            request_log=args.request_log,
            log_prompts=args.request_log_prompts,
            monitor=monitor,
        )
        host, port = sock.getsockname()[:2]
        print(
            f"serving {args.model_name!r} on http://{host}:{port}/v1 (chat page at /)", flush=True
        )
        server = uvicorn.Server(uvicorn.Config(app, log_level="info"))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``minillm serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a checkpoint over an OpenAI-compatible HTTP API",
        description="Serve a model with /v1/completions, /v1/chat/completions, /v1/models, "
        "/health, /metrics and a chat page at /. Without --checkpoint the course model is used "
        "(--model base or chat). A chat model (its tokenizer has the chat tokens) answers chats "
        "through lesson 08's chat template; the base model gets a play-script prompt; /v1/models "
        "says which (chat_format).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        choices=("base", "chat"),
        default="base",
        help="which course model to serve (ignored with --checkpoint)",
    )
    parser.add_argument("--checkpoint", default=None, help="checkpoint file or its run folder")
    parser.add_argument("--tokenizer", default=None, help="default: tokenizer.bpe beside it")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=checked_number(int, low=0, high=65535),
        default=8000,
        help="port to listen on (0: any free port)",
    )
    parser.add_argument("--model-name", default="minillm", help="the name clients ask for")
    parser.add_argument("--slots", type=int, default=8, help="largest running batch")
    parser.add_argument(
        "--request-log", default=None, metavar="PATH", help="append one JSON line per request"
    )
    parser.add_argument(
        "--request-log-prompts",
        action="store_true",
        help="also write each prompt's text to the request log (it may hold personal data)",
    )
    parser.add_argument(
        "--drift-monitor",
        action="store_true",
        help="score every prompt against the validation plays and report drift on /metrics",
    )
    parser.add_argument("--drift-window", type=int, default=32, help="prompts per drift window")
    parser.set_defaults(handler=_serve_cli)
