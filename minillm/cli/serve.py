"""``minillm serve``: the OpenAI-compatible HTTP server (:mod:`minillm.serve.app`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from minillm.course import course_model
from minillm.serve.app import create_app
from minillm.serve.monitor import DriftMonitor
from minillm.tokenizer.bpe import BPETokenizer
from minillm.train.checkpoint import CHECKPOINT_NAME, TOKENIZER_NAME, load_checkpoint


def _serve_cli(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        model, tokenizer = course_model(args.model, verbose=True)
    else:
        path = Path(args.checkpoint)
        path = path / CHECKPOINT_NAME if path.is_dir() else path
        model = load_checkpoint(path).build_model()
        tokenizer_path = Path(args.tokenizer or path.parent / TOKENIZER_NAME)
        if not tokenizer_path.is_file():
            raise FileNotFoundError(f"no tokenizer at {tokenizer_path}; pass --tokenizer PATH")
        tokenizer = BPETokenizer.load(tokenizer_path)
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
    print(f"serving {args.model_name!r} on http://{args.host}:{args.port}/v1 (chat page at /)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
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
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
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
