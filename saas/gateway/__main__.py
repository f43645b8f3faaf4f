"""Command line of the edge gateway: `python -m saas.gateway serve | status | echo`."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import requests

from saas.gateway.config import ConfigError, GatewayConfig, load_config, token_file_is_shared
from saas.gateway.forwarder import BearerAuth, Forwarder, http_session, response_detail
from saas.gateway.scp import start_scp, stop_scp
from saas.gateway.spool import Spool, SpoolBusy, lock_for_serving
from saas.gateway.status import format_report, status_report

logger = logging.getLogger("saas.gateway")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
FORWARDER_JOIN_S = 30.0
REQUIRED_SCOPE = "studies:write"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="gateway.toml (TOML settings file)")
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO"
    )
    parser = argparse.ArgumentParser(
        prog="python -m saas.gateway",
        description="ReadRoom edge gateway: receives DICOM at the clinic and forwards it to ReadRoom over STOW-RS.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", parents=[common], help="run the C-STORE SCP and the forwarder until SIGTERM/SIGINT")
    status = commands.add_parser("status", parents=[common], help="print the spool queue and the last error")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    echo = commands.add_parser("echo", parents=[common], help="check that the platform answers and takes the token")
    echo.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # pynetdicom's own debug output can print dataset elements, patient names among them.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _warn_about_transport(config: GatewayConfig) -> None:
    if not config.tls_verify:
        logger.warning("tls_verify is off: the platform's certificate is not checked")
    host = urlsplit(config.platform_url or "").hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if config.platform_url and config.platform_url.startswith("http://") and not loopback:
        logger.warning("platform_url is plain http: images and the API token cross the network unencrypted")
    if config.api_token_file and token_file_is_shared(config.api_token_file):
        logger.warning("api_token_file %s is readable by other users; chmod 600 it", config.api_token_file)


def serve(config: GatewayConfig) -> int:
    assert config.spool_dir is not None
    try:
        lock = lock_for_serving(config.spool_dir)
        spool = Spool(config.spool_dir)
        recovery = spool.recover()
    except SpoolBusy as error:
        print(f"readroom-gateway: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except (OSError, sqlite3.Error) as error:
        print(f"readroom-gateway: spool_dir: cannot use {config.spool_dir}: {_reason(error)}", file=sys.stderr)
        return EXIT_CONFIG
    _warn_about_transport(config)
    logger.info(
        "spool %s: removed %d incomplete reception(s) and %d already delivered file(s); %d queued",
        config.spool_dir,
        recovery.removed_partial,
        recovery.removed_delivered,
        len(spool.pending()),
    )

    stop, wake = threading.Event(), threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("%s received, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    forwarder = Forwarder(config, spool, stop=stop, wake=wake)
    # Daemon: a POST still in flight at shutdown must not hold the process; its instances stay spooled.
    forwarder_thread = threading.Thread(target=forwarder.run, name="forwarder", daemon=True)
    forwarder_thread.start()
    try:
        server = start_scp(config, spool, on_spooled=wake.set)
    except OSError as error:
        print(
            f"readroom-gateway: listen_host/listen_port: cannot listen on {config.listen_host}:{config.listen_port}: "
            f"{error.strerror or error}",
            file=sys.stderr,
        )
        stop.set()
        forwarder_thread.join(FORWARDER_JOIN_S)
        spool.close()
        return EXIT_CONFIG
    logger.info("listening as %s on %s:%d", config.ae_title, config.listen_host, config.listen_port)

    outcome = EXIT_OK
    while not stop.wait(1.0):
        if not forwarder_thread.is_alive():
            # Receiving on without forwarding would fill the spool unseen: stop, so that the service
            # manager restarts the gateway (and the spool is resumed), and say why.
            logger.critical("the forwarder stopped unexpectedly; shutting down so that the gateway is restarted")
            outcome = EXIT_FAILED
            break
    stop_scp(server)
    wake.set()
    forwarder_thread.join(FORWARDER_JOIN_S)
    spool.ledger.set_state(forwarding="stopped", next_attempt_at=None)
    spool.close()
    lock.close()
    logger.info("stopped")
    return outcome


def _reason(error: Exception) -> str:
    return (error.strerror if isinstance(error, OSError) else None) or str(error) or type(error).__name__


def status(config: GatewayConfig, *, as_json: bool) -> int:
    assert config.spool_dir is not None
    try:
        report = status_report(config.spool_dir)
    except (OSError, sqlite3.Error) as error:
        print(
            f"readroom-gateway: spool_dir: cannot read {config.spool_dir}: {_reason(error)}"
            " (run status as the user the gateway runs as)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    return EXIT_OK


def echo(config: GatewayConfig, *, as_json: bool) -> int:
    problems: list[str] = []
    me: dict = {}
    reachable = False
    session = http_session(config)
    try:
        response = session.get(
            config.me_url,
            auth=BearerAuth(config.current_token()),
            headers={"Accept": "application/json"},
            timeout=(10, 30),
            allow_redirects=False,
        )
    except requests.RequestException as error:
        problems.append(f"cannot reach the platform at {config.me_url}: {type(error).__name__}: {error}")
    else:
        reachable = True
        if response.status_code in (401, 403):
            problems.append(
                f"the platform refused the API token (HTTP {response.status_code}: {response_detail(response)})"
            )
        elif 300 <= response.status_code < 400:
            problems.append(
                f"{config.me_url} redirects to {response.headers.get('Location', '?')}; "
                "set platform_url to the final address"
            )
        elif response.status_code != 200:
            problems.append(f"HTTP {response.status_code} from {config.me_url}: {response_detail(response)}")
        else:
            try:
                me = response.json()
            except ValueError:
                problems.append(f"{config.me_url} did not answer JSON; is platform_url right?")
    finally:
        session.close()

    tenants = [tenant.get("slug") for tenant in me.get("tenants") or [] if isinstance(tenant, dict)]
    scopes = list(me.get("scopes") or [])
    if me and config.tenant_slug not in tenants:
        problems.append(
            f"the token belongs to {', '.join(map(str, tenants)) or 'no clinic'}, "
            f"not to tenant_slug {config.tenant_slug!r}"
        )
    if me and REQUIRED_SCOPE not in scopes:
        problems.append(f"the token lacks the {REQUIRED_SCOPE} scope (it has: {', '.join(scopes) or 'none'})")

    if as_json:
        print(
            json.dumps(
                {
                    "platform_url": config.platform_url,
                    "reachable": reachable,
                    "tenant": me.get("active_tenant") or (tenants[0] if len(tenants) == 1 else None),
                    "tenants": tenants,
                    "scopes": scopes,
                    "ok": not problems,
                    "problems": problems,
                },
                indent=2,
            )
        )
    else:
        if me:
            print(f"platform: {config.platform_url} answers")
            print(f"tenant:   {me.get('active_tenant') or ', '.join(map(str, tenants)) or '-'}")
            print(f"scopes:   {' '.join(scopes) or '-'}")
        for problem in problems:
            print(f"problem:  {problem}")
        if not problems:
            print("ok: the gateway can send studies")
    return EXIT_OK if not problems else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    _configure_logging(getattr(arguments, "log_level", "INFO"))
    try:
        config = load_config(
            config_path=getattr(arguments, "config", None), environ=os.environ, command=arguments.command
        )
    except ConfigError as error:
        print(f"readroom-gateway: refusing to start `{arguments.command}`; fix these settings:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if arguments.command == "serve":
        return serve(config)
    if arguments.command == "status":
        return status(config, as_json=arguments.json)
    return echo(config, as_json=arguments.json)


if __name__ == "__main__":
    sys.exit(main())
