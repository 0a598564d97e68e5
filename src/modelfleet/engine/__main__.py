"""`python -m modelfleet.engine`: one engine replica. The control plane starts these; people rarely do.

Prints `MODELFLEET_ENGINE_READY port=N` on stdout once the model is loaded and the port is open.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from modelfleet.engine import READY_LINE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelfleet.engine", description=__doc__)
    parser.add_argument("--model", help="path to a GGUF file; default: the bundled SmolLM2-135M-Instruct")
    parser.add_argument("--name", default="model", help="model id reported by /v1/models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--context-size", type=int, default=2048)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    from modelfleet.engine.server import Engine, build_app

    if args.model is None:  # e.g. a dev pod (`modelfleet deploy k8s`), which cannot know where pip put the GGUF
        from modelfleet.engine.model import bundled_model_path

        args.model = str(bundled_model_path())
    engine = Engine(args.model, threads=args.threads, context_size=args.context_size, name=args.name)
    asyncio.run(_serve(build_app(engine), args.host, args.port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"{READY_LINE} port={bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    main()
