"""Runs the localstripe Stripe emulator bound to loopback only, with its store under var/.

localstripe's own CLI always binds `::` (every interface) and pickles its whole store to
the fixed path /tmp/localstripe.pickle, shared by every checkout on the machine. This
wrapper serves the same aiohttp application on 127.0.0.1 and keeps the store in a file of
our choosing (written atomically, so a kill mid-write cannot corrupt it).

    .venv/bin/python scripts/localstripe_loopback.py --port 8420 --store var/stripe/store.pickle
"""

import argparse
import logging
import os
import pickle
import tempfile
from pathlib import Path

from aiohttp import web
from localstripe.resources import Store, store
from localstripe.server import app


def _use_store_file(path: Path) -> None:
    """Point localstripe's load/dump methods at `path` instead of /tmp/localstripe.pickle."""

    def try_load_from_disk(self):
        try:
            with path.open("rb") as f:
                old = pickle.load(f)  # noqa: S301 - our own file under var/, as localstripe does
        except FileNotFoundError:
            return
        self.clear()
        self.update(old)

    def dump_to_disk(self):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".localstripe-")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    Store.try_load_from_disk = try_load_from_disk
    Store.dump_to_disk = dump_to_disk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--store", type=Path, required=True, help="pickle file for the emulator's state")
    parser.add_argument("--from-scratch", action="store_true", help="ignore the saved state")
    args = parser.parse_args()

    args.store.parent.mkdir(parents=True, exist_ok=True)
    _use_store_file(args.store.resolve())
    if not args.from_scratch:
        store.try_load_from_disk()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    web.run_app(app, host=args.host, port=args.port, access_log=logging.getLogger("aiohttp.access"))


if __name__ == "__main__":
    main()
