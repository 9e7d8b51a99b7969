#!/usr/bin/env python3
"""llama.cpp's HTTP server from the PyPI wheel `xllamacpp` (MIT), for nodes without `llama-server`.

maas-agent starts it as an argv (never through a shell):

    python xllamacpp-server.py --host H --port P --model FILE.gguf --alias NAME [--embedding]
        [--ctx-size N] [--threads N] [--parallel N]

The wheel embeds llama.cpp's own server (/v1/chat/completions, /v1/completions,
/v1/embeddings, /v1/models, /health). The process serves until SIGTERM or SIGINT.
"""

import argparse
import signal
import sys
import threading


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--embedding", action="store_true")
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.embedding = args.embedding
    if args.threads > 0:
        params.cpuparams.n_threads = args.threads
    server = xlc.Server(params)
    print(f"xllamacpp serving {args.alias} at {server.listening_address}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
