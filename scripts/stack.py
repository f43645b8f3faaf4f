"""Local stack manager: starts, stops and reports ReadRoom's development/test services under var/.

    .venv/bin/python scripts/stack.py up [--no-web]   start what is not running (idempotent)
    .venv/bin/python scripts/stack.py down            stop what `up` started
    .venv/bin/python scripts/stack.py status          each component, running or not, and its URL
    .venv/bin/python scripts/stack.py env             print the path of var/local.env

Everything listens on 127.0.0.1 and keeps its state under var/ (gitignored):
  var/secrets.env   passwords and keys, generated once and reused
  var/local.env     the URLs and credentials the code and tests use (`set -a; . var/local.env`)
  var/stack.json    which servers this stack uses and what it started (read by status/down)
  var/run/*.pid     pid files of the processes `up` started; var/log/*.log their logs

Which PostgreSQL and Redis: an admin `DATABASE_URL` (a superuser, or CREATEROLE+CREATEDB)
or a `REDIS_URL` in the environment is reused as given. A `DATABASE_URL` for readroom's own
roles (someone sourced var/local.env) is not an admin URL and is ignored. Without one, the
servers recorded in var/stack.json are kept while the stack is up; otherwise `up` starts a
private cluster (var/pg, port 54329) and a private redis-server (var/redis, port 63790).
`down` never touches a reused server, and forgets the choice.

Ports can be moved with READROOM_PG_PORT, READROOM_REDIS_PORT, READROOM_S3_PORT,
READROOM_STRIPE_PORT and READROOM_WEB_PORT.
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import redis
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
RUN = VAR / "run"
LOGS = VAR / "log"
SECRETS_FILE = VAR / "secrets.env"
LOCAL_ENV = VAR / "local.env"
STATE_FILE = VAR / "stack.json"
VENV_BIN = ROOT / ".venv" / "bin"
PG_BIN = Path("/usr/lib/postgresql/15/bin")

HOST = "127.0.0.1"
PG_PORT = int(os.environ.get("READROOM_PG_PORT", "54329"))
REDIS_PORT = int(os.environ.get("READROOM_REDIS_PORT", "63790"))
S3_PORT = int(os.environ.get("READROOM_S3_PORT", "9000"))
STRIPE_PORT = int(os.environ.get("READROOM_STRIPE_PORT", "8420"))
WEB_PORT = int(os.environ.get("READROOM_WEB_PORT", "8000"))

DB_NAME = "readroom"
OWNER_ROLE = "readroom_owner"
APP_ROLE = "readroom_app"
PG_SUPERUSER = "postgres"
DJANGO_SETTINGS = "saas.config.settings.local"
HEALTH_TIMEOUT_S = 60


class StackError(Exception):
    """A failure to report in one line (plus any log tail) rather than as a traceback."""


def note(message: str) -> None:
    print(f"stack: {message}", flush=True)


# --- small helpers -----------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (values optionally shell-quoted), as written by write_env_file."""
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            parts = shlex.split(value) if value else [""]
            values[key.strip()] = parts[0] if parts else ""
    return values


def write_private(path: Path, text: str) -> None:
    """Write atomically, readable by the owner only (these files hold credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_env_file(path: Path, values: dict[str, str], header: str) -> None:
    # Quote only when needed: bash `.` and django-environ's read_env both accept bare values
    # and plain single-quoted ones.
    lines = [f"# {header}"] + [f"{key}={shlex.quote(value)}" for key, value in values.items()]
    write_private(path, "\n".join(lines) + "\n")


def token(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def port_answers(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_alive(pid: int | None, marker: str) -> bool:
    """The pid runs, and is still our program (a recycled pid runs something else)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = ""
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z" and marker in pid_cmdline(pid)


def read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(text)


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def load_state() -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(STATE_FILE.read_text())
    return {}


def save_state(state: dict) -> None:
    # Mode 0600: a reused server's admin URL may carry a password.
    write_private(STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def stack_lock():
    """Serialise up/down: several engineers' `make test` may start the stack at once."""
    RUN.mkdir(parents=True, exist_ok=True)
    with open(RUN / "stack.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# --- background processes started and stopped by pid file -------------------------------


class Service:
    """A process `up` starts in its own session (Ctrl-C in the terminal does not reach it)."""

    def __init__(self, name: str, marker: str, port: int | None = None):
        self.name, self.marker, self.port = name, marker, port
        self.pidfile = RUN / f"{name}.pid"
        self.log = LOGS / f"{name}.log"

    def pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid_alive(pid, self.marker) else None

    def running(self) -> bool:
        return self.pid() is not None and (self.port is None or port_answers(self.port))

    def start(self, argv: list[str], env: dict[str, str] | None = None, ready_timeout: float = 30) -> int:
        if self.port is not None and port_answers(self.port):
            raise StackError(f"{self.name}: port {HOST}:{self.port} is taken by a process this stack did not start")
        self.stop(quiet=True)  # a live pid whose port is dead is a hung process
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log, open(os.devnull, "rb") as devnull:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pidfile.write_text(f"{proc.pid}\n")

        def ready() -> bool:
            if proc.poll() is not None:
                raise StackError(f"{self.name} exited with status {proc.returncode}\n{log_tail(self.log)}")
            return self.port is None or port_answers(self.port)

        if not wait_until(ready, ready_timeout):
            raise StackError(
                f"{self.name} did not answer on port {self.port} in {ready_timeout:.0f}s\n{log_tail(self.log)}"
            )
        # A process that dies right after binding, or (without a port to watch) while it is
        # still importing Django and connecting to the broker, should fail `up`, not `status`.
        time.sleep(0.3 if self.port is not None else 3)
        ready()
        return proc.pid

    def ensure(self, state: dict, argv: list[str], env: dict[str, str] | None = None, config: str = "") -> int:
        """Start unless running with the same command and config; restart if either changed.

        `config` stands for what the process read at start that argv does not show (secrets
        passed through the environment, var/local.env): a process started with old values
        would otherwise go on serving with them.
        """
        processes = state.setdefault("processes", {})
        fingerprint = hashlib.sha256(json.dumps([argv, config]).encode()).hexdigest()
        if self.running():
            if (processes.get(self.name) or {}).get("fingerprint") == fingerprint:
                return self.pid()
            note(f"restarting {self.name}: its command line or configuration changed")
            self.stop(quiet=True)
        else:
            note(f"starting {self.name}" + (f" on {HOST}:{self.port}" if self.port else ""))
        pid = self.start(argv, env)
        processes[self.name] = {"pid": pid, "fingerprint": fingerprint, "log": str(self.log)}
        save_state(state)
        return pid

    def stop(self, quiet: bool = False) -> bool:
        return bool(stop_services([self], quiet=quiet))


def stop_services(services: list[Service], quiet: bool = False, timeout: float = 30) -> list[str]:
    """SIGTERM every running one at once (graceful shutdowns overlap), then wait for each."""
    running = [(service, service.pid()) for service in services]
    running = [(service, pid) for service, pid in running if pid is not None]
    for service, pid in running:
        if not quiet:
            note(f"stopping {service.name} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for service, pid in running:
        wait_until(lambda: not pid_alive(pid, service.marker), max(0.0, deadline - time.monotonic()))  # noqa: B023
        # Started with start_new_session, so the group id is the leader's pid: this reaches
        # children the leader left behind (or all of them, when it ignored SIGTERM).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(1)
        service.pidfile.unlink(missing_ok=True)
    for service in services:
        if service.pid() is None:
            service.pidfile.unlink(missing_ok=True)
    return [service.name for service, _ in running]


# --- secrets and configuration -----------------------------------------------------------

SECRET_GENERATORS = {
    "PG_SUPERUSER_PASSWORD": lambda: token(32),
    "READROOM_OWNER_PASSWORD": lambda: token(32),
    "READROOM_APP_PASSWORD": lambda: token(32),
    # AWS-shaped keys; rclone rejects access key ids shorter than 3 characters.
    "S3_ACCESS_KEY_ID": lambda: "RR" + token(18, string.ascii_uppercase + string.digits),
    "S3_SECRET_ACCESS_KEY": lambda: token(40),
    "DJANGO_SECRET_KEY": lambda: token(64),
}


def load_secrets() -> dict[str, str]:
    """Generate missing secrets once into var/secrets.env; reuse the file afterwards."""
    values = read_env_file(SECRETS_FILE)
    missing = [key for key in SECRET_GENERATORS if not values.get(key)]
    if missing:
        for key in missing:
            values[key] = SECRET_GENERATORS[key]()
        write_env_file(SECRETS_FILE, values, "Generated once by scripts/stack.py; delete to rotate.")
        note(f"generated {', '.join(missing)} in {SECRETS_FILE.relative_to(ROOT)}")
    return values


def role_url(role: str, password: str, host: str, port: int, dbname: str = DB_NAME) -> str:
    quote = urllib.parse.quote
    return f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(dbname, safe='')}"


def django_env(local_env: dict[str, str]) -> dict[str, str]:
    """The caller's environment with var/local.env on top (its DATABASE_URL is the app role)."""
    env = dict(os.environ)
    env.update(local_env)
    env["DJANGO_SETTINGS_MODULE"] = DJANGO_SETTINGS
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


# --- PostgreSQL --------------------------------------------------------------------------


def pg_can_connect(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def choose_postgres(state: dict) -> dict:
    """Decide between the caller's admin server, the recorded one and a private cluster."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        try:
            info = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as error:
            raise StackError(f"DATABASE_URL is not a PostgreSQL URL: {error}") from None
        if info.get("user") in (OWNER_ROLE, APP_ROLE):
            url = ""  # var/local.env was sourced: that is the app role, not an admin URL
        elif info.get("host") in (HOST, "localhost") and str(info.get("port")) == str(PG_PORT):
            url = ""  # that is this stack's own private cluster
    if url:
        if not pg_can_connect(url):
            raise StackError("DATABASE_URL is set but does not connect; unset it to use a private cluster")
        return {"mode": "reuse", "admin_url": url}
    recorded = state.get("postgres") or {}
    if recorded.get("mode") == "reuse" and pg_can_connect(recorded["admin_url"]):
        return {"mode": "reuse", "admin_url": recorded["admin_url"]}
    return {"mode": "private"}


def pg_owner_user() -> tuple[str, list[str]]:
    """The OS user a private cluster runs as, and the prefix to run its binaries as it."""
    if os.geteuid() == 0:
        # initdb and postgres refuse to run as root.
        return "postgres", ["runuser", "-u", "postgres", "--"]
    return pwd.getpwuid(os.geteuid()).pw_name, []


def pg_socket_dir() -> Path:
    sock_dir = RUN / "pg"
    # A unix socket path must fit in 107 bytes; deep checkouts get a short directory instead.
    if len(str(sock_dir / f".s.PGSQL.{PG_PORT}")) > 100:
        sock_dir = Path(tempfile.gettempdir()) / f"readroom-pg-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]}"
    return sock_dir


PG_SERVICE = Service("postgres", marker="postgres", port=PG_PORT)
PG_DATA = VAR / "pg"
PG_SERVICE.pidfile = PG_DATA / "postmaster.pid"  # written by postgres itself
PG_SERVICE.log = LOGS / "postgres.log"


def pg_private_conninfo(sock_dir: Path) -> str:
    # Over the unix socket with peer auth mapped to the superuser: works even when
    # var/secrets.env was regenerated and the stored superuser password is stale.
    return psycopg.conninfo.make_conninfo(host=str(sock_dir), port=PG_PORT, user=PG_SUPERUSER, dbname="postgres")


def pg_private_up(secrets_: dict[str, str]) -> dict:
    os_user, as_owner = pg_owner_user()
    sock_dir = pg_socket_dir()
    uid = pwd.getpwnam(os_user).pw_uid
    gid = pwd.getpwnam(os_user).pw_gid

    def owned_dir(path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, gid)
        os.chmod(path, mode)

    VAR.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    owned_dir(sock_dir, 0o755)
    # var/ itself stays root's; only the cluster's own directories are given to its OS user,
    # who must still be able to traverse the checkout's parent directories to reach them.
    if as_owner and subprocess.run([*as_owner, "test", "-x", str(VAR)], check=False).returncode != 0:
        raise StackError(
            f"the {os_user} OS user cannot reach {VAR} (a parent directory is not searchable); "
            "set DATABASE_URL to an existing server instead"
        )

    if not (PG_DATA / "PG_VERSION").exists():
        note(f"initialising a private PostgreSQL cluster in {PG_DATA.relative_to(ROOT)}")
        owned_dir(PG_DATA, 0o700)
        fd, pwfile = tempfile.mkstemp(dir=sock_dir, prefix=".pw-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets_["PG_SUPERUSER_PASSWORD"] + "\n")
            os.chown(pwfile, uid, gid)
            # fmt: off
            initdb = [
                *as_owner, str(PG_BIN / "initdb"), "-D", str(PG_DATA), "-U", PG_SUPERUSER, f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
            ]
            # fmt: on
            result = subprocess.run(initdb, capture_output=True, text=True, check=False)
        finally:
            os.unlink(pwfile)
        if result.returncode != 0:
            raise StackError(f"initdb failed:\n{result.stdout}{result.stderr}")
        with open(PG_DATA / "postgresql.conf", "a") as f:
            f.write("\n# Settings managed by scripts/stack.py\ninclude 'readroom.conf'\n")

    def config_file(name: str, text: str) -> bool:
        path = PG_DATA / name
        if path.exists() and path.read_text() == text:
            return False
        path.write_text(text)
        os.chown(path, uid, gid)
        os.chmod(path, 0o600)
        return True

    changed = config_file(
        "readroom.conf",
        "# Written by scripts/stack.py on every `up`.\n"
        f"listen_addresses = '{HOST}'\n"
        f"port = {PG_PORT}\n"
        f"unix_socket_directories = '{sock_dir}'\n"
        "max_connections = 200\n"
        # A development cluster may lose its last commits in an OS crash; tests run faster.
        "synchronous_commit = off\n"
        "timezone = 'UTC'\n",
    )
    # Passwords (scram-sha-256) for every TCP login; the superuser alone may also log in
    # over the socket as the cluster's OS user or as whoever runs this script.
    changed |= config_file(
        "pg_hba.conf",
        "# Written by scripts/stack.py on every `up`.\n"
        "local  all  postgres                 peer map=readroom\n"
        "local  all  all                      scram-sha-256\n"
        f"host   all  all       {HOST}/32      scram-sha-256\n",
    )
    me = pwd.getpwuid(os.geteuid()).pw_name
    changed |= config_file(
        "pg_ident.conf",
        "# Written by scripts/stack.py on every `up`.\n"
        f"readroom  {os_user}  {PG_SUPERUSER}\n"
        f"readroom  {me}  {PG_SUPERUSER}\n",
    )

    pg_ctl = [*as_owner, str(PG_BIN / "pg_ctl"), "-D", str(PG_DATA)]
    if PG_SERVICE.running():
        if changed:
            note("reloading the private PostgreSQL configuration")
            subprocess.run([*pg_ctl, "reload"], check=True, capture_output=True)
    else:
        if port_answers(PG_PORT):
            raise StackError(f"port {HOST}:{PG_PORT} is taken by a PostgreSQL this stack did not start")
        note(f"starting private PostgreSQL on {HOST}:{PG_PORT}")
        log = PG_SERVICE.log
        log.touch()
        os.chown(log, uid, gid)
        # Own session, so a Ctrl-C in the terminal that ran `up` does not reach the postmaster.
        result = subprocess.run(
            [*pg_ctl, "-l", str(log), "-w", "-t", "60", "start"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            start_new_session=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"pg_ctl start failed:\n{result.stdout}{result.stderr}\n{log_tail(log)}")

    admin = pg_private_conninfo(sock_dir)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(PG_SUPERUSER), sql.Literal(secrets_["PG_SUPERUSER_PASSWORD"])
            )
        )
    return {
        "mode": "private",
        "admin_url": admin,
        "host": HOST,
        "port": PG_PORT,
        "data_dir": str(PG_DATA),
        "pid": PG_SERVICE.pid(),
    }


def pg_private_down() -> bool:
    if PG_SERVICE.pid() is None:
        return False
    note(f"stopping private PostgreSQL (pid {PG_SERVICE.pid()})")
    _, as_owner = pg_owner_user()
    subprocess.run(
        [*as_owner, str(PG_BIN / "pg_ctl"), "-D", str(PG_DATA), "-m", "fast", "-w", "-t", "60", "stop"],
        check=False,
        capture_output=True,
    )
    return True


def ensure_roles_and_database(admin_url: str, host: str, port: int, secrets_: dict[str, str]) -> None:
    """Roles, database and schema privileges; idempotent, passwords reset every time."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        is_super = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        for role, password, attributes in (
            (OWNER_ROLE, secrets_["READROOM_OWNER_PASSWORD"], "LOGIN CREATEDB NOCREATEROLE"),
            (APP_ROLE, secrets_["READROOM_APP_PASSWORD"], "LOGIN NOCREATEDB NOCREATEROLE"),
        ):
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
            # Only a superuser may name SUPERUSER/BYPASSRLS/REPLICATION, even to switch them off;
            # with a CREATEROLE admin the new role's defaults are off and checked below.
            if is_super:
                attributes += " NOSUPERUSER NOBYPASSRLS NOREPLICATION"
            conn.execute(
                sql.SQL("ALTER ROLE {} " + attributes + " PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            rolsuper, bypassrls = conn.execute(
                "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", [role]
            ).fetchone()
            if rolsuper or bypassrls:
                # Row-level security would not apply to it: refuse rather than run unsafely.
                raise StackError(f"role {role} is SUPERUSER or BYPASSRLS; an admin must fix it")

        current_owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [DB_NAME]
        ).fetchone()
    if current_owner is None:
        note(f"creating database {DB_NAME}")
        # Created by the owner role itself (it has CREATEDB), which also works when the
        # admin is CREATEROLE without being a member of readroom_owner.
        maintenance_db = psycopg.conninfo.conninfo_to_dict(admin_url).get("dbname") or "postgres"
        with psycopg.connect(
            role_url(OWNER_ROLE, secrets_["READROOM_OWNER_PASSWORD"], host, port, maintenance_db), autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))
    elif current_owner[0] != OWNER_ROLE:
        note(f"database {DB_NAME} belonged to {current_owner[0]}; giving it to {OWNER_ROLE}")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(DB_NAME), sql.Identifier(OWNER_ROLE))
            )

    sys.path.insert(0, str(ROOT))
    from saas.config.dbsetup import prepare_database

    with psycopg.connect(
        role_url(OWNER_ROLE, secrets_["READROOM_OWNER_PASSWORD"], host, port), autocommit=True
    ) as conn:
        prepare_database(conn, app_role=APP_ROLE)


def server_address(conninfo: str) -> tuple[str, int]:
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    host = info.get("host") or HOST
    if host.startswith("/") or "," in host:
        raise StackError("DATABASE_URL must name a TCP host (the app connects over TCP)")
    return host, int(info.get("port") or 5432)


# --- Redis -------------------------------------------------------------------------------

REDIS_SERVICE = Service("redis", marker="redis-server", port=REDIS_PORT)
PRIVATE_REDIS_URL = f"redis://{HOST}:{REDIS_PORT}/0"


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping())
    except (redis.RedisError, ValueError):
        return False


def choose_redis(state: dict) -> dict:
    url = os.environ.get("REDIS_URL", "").strip()
    if url:
        parsed = urllib.parse.urlsplit(url)
        if parsed.hostname in (HOST, "localhost") and parsed.port == REDIS_PORT:
            url = ""  # our own private server, from a sourced var/local.env
    if url:
        if not redis_answers(url):
            raise StackError("REDIS_URL is set but does not answer PING; unset it to use a private redis-server")
        return {"mode": "reuse", "url": url}
    recorded = state.get("redis") or {}
    if recorded.get("mode") == "reuse" and redis_answers(recorded["url"]):
        return {"mode": "reuse", "url": recorded["url"]}
    return {"mode": "private", "url": PRIVATE_REDIS_URL}


def redis_private_up() -> dict:
    if not REDIS_SERVICE.running():
        data = VAR / "redis"
        data.mkdir(parents=True, exist_ok=True)
        note(f"starting private redis-server on {HOST}:{REDIS_PORT}")
        if port_answers(REDIS_PORT):
            raise StackError(f"port {HOST}:{REDIS_PORT} is taken by a process this stack did not start")
        LOGS.mkdir(parents=True, exist_ok=True)
        # redis daemonizes itself and writes its own pid file; the append-only file keeps
        # queued Celery tasks across restarts, RDB snapshots are not needed on top.
        # fmt: off
        argv = [
            "redis-server", "--bind", HOST, "--port", str(REDIS_PORT),
            "--daemonize", "yes", "--pidfile", str(REDIS_SERVICE.pidfile),
            "--dir", str(data), "--appendonly", "yes", "--save", "", "--logfile", str(REDIS_SERVICE.log),
        ]
        # fmt: on
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_until(lambda: redis_answers(PRIVATE_REDIS_URL), 15):
            raise StackError(f"redis-server did not answer\n{log_tail(REDIS_SERVICE.log)}")
        wait_until(lambda: REDIS_SERVICE.pid() is not None, 5)
    return {"mode": "private", "url": PRIVATE_REDIS_URL, "pid": REDIS_SERVICE.pid()}


# --- S3 (rclone serve s3), Stripe (localstripe) ------------------------------------------

S3_SERVICE = Service("s3", marker="rclone", port=S3_PORT)
STRIPE_SERVICE = Service("stripe", marker="localstripe_loopback", port=STRIPE_PORT)


def s3_server_argv(address: str, data: Path) -> list[str]:
    """The local S3 server's command line (also used by tests/faults for its private server)."""
    # fmt: off
    return [
        str(VENV_BIN / "rclone"), "serve", "s3",
        "--config", os.devnull,  # no rclone.conf: the backend is given inline, below
        "--addr", address,
        "--force-path-style=true",  # boto3 uses path-style addressing with a custom endpoint
        # No ETag on GET and HEAD: rclone hashed the whole file for it whenever its short-lived cache had
        # no hash (a 161 MB AI input waited 0.26 s for its first byte). Nothing here reads an ETag; a PUT
        # still answers its body's MD5, computed as it streams in.
        "--etag-hash", "",
        # No hash of the file on every GET either (S3 does none): 0.5-0.8 s -> 0.2-0.45 s for that input.
        # A PUT's SHA-256 is still kept and answered (the archive confirms it by HEAD).
        "--no-checksum",
        # Buckets are directories under var/s3 that tests may create and remove behind the
        # server's back, so directory listings are cached only briefly.
        "--dir-cache-time", "1s",
        # Signed requests carrying user metadata can exceed the 4 KiB default header limit.
        "--max-header-bytes", "65536",
        f":local:{data}",
    ]
    # fmt: on


def s3_up(state: dict, secrets_: dict[str, str]) -> dict:
    data = VAR / "s3"
    data.mkdir(parents=True, exist_ok=True)
    auth_key = f"{secrets_['S3_ACCESS_KEY_ID']},{secrets_['S3_SECRET_ACCESS_KEY']}"
    env = dict(os.environ)
    # Through the environment rather than argv, so the secret does not show in `ps`
    # (a CSV list, hence the quotes around the pair).
    env["RCLONE_AUTH_KEY"] = f'"{auth_key}"'
    argv = s3_server_argv(f"{HOST}:{S3_PORT}", data)
    pid = S3_SERVICE.ensure(state, argv, env=env, config=auth_key)
    return {"url": f"http://{HOST}:{S3_PORT}", "pid": pid, "dir": str(data)}


def stripe_up(state: dict) -> dict:
    # fmt: off
    argv = [
        str(VENV_BIN / "python"), str(ROOT / "scripts" / "localstripe_loopback.py"),
        "--host", HOST, "--port", str(STRIPE_PORT), "--store", str(VAR / "stripe" / "store.pickle"),
    ]
    # fmt: on
    pid = STRIPE_SERVICE.ensure(state, argv)
    return {"url": f"http://{HOST}:{STRIPE_PORT}", "pid": pid}


# --- Django: migrations, tenants, web, Celery --------------------------------------------

WEB_SERVICE = Service("web", marker="gunicorn", port=WEB_PORT)
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)s "%(a)s"'
WORKER_SERVICE = Service("worker", marker="celery")
BEAT_SERVICE = Service("beat", marker="celery")
# The CPU inference pool (inference_workers/, no Django): the same broker, its own queue.
AI_WORKER_SERVICE = Service("ai-worker", marker="celery")
DJANGO_SERVICES = (WEB_SERVICE, WORKER_SERVICE, BEAT_SERVICE, AI_WORKER_SERVICE)


def manage(args: list[str], env: dict[str, str], allow_unknown: bool = False) -> bool:
    """Run a manage.py command, streaming its output; False if the command does not exist yet."""
    proc = subprocess.Popen(
        [str(VENV_BIN / "python"), "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    for line in proc.stdout:
        output.append(line)
        print(f"  {line}", end="", flush=True)
    if proc.wait() != 0:
        if allow_unknown and any(f"Unknown command: '{args[0]}'" in line for line in output):
            note(f"manage.py {args[0]} does not exist yet; skipped")
            return False
        raise StackError(f"manage.py {' '.join(args)} failed with status {proc.returncode}")
    return True


def health_ok() -> bool:
    # No proxy: CI environments may set http_proxy, which must not see loopback traffic.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{HOST}:{WEB_PORT}/healthz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def source_fingerprint() -> str:
    digest = hashlib.sha256()
    for folder in ("saas", "tenants", "inference_workers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}\n".encode())
    return digest.hexdigest()


def django_up(state: dict, local_env: dict[str, str], env_hash: str, web: bool) -> None:
    if not (ROOT / "manage.py").exists():
        note("manage.py does not exist yet; skipping migrations, tenants and web")
        return
    env = django_env(local_env)
    note("applying migrations (owner role)")
    manage(["migrate", "--database", "owner", "--noinput"], env)
    if not web:
        # The test suite provisions its own tenants in its own database: the development
        # tenants' Orthancs are neither needed nor allowed to fail a test run.
        return
    note("starting tenant Orthancs (manage.py tenants_up)")
    manage(["tenants_up"], env, allow_unknown=True)

    # fmt: off
    argvs = {
        WEB_SERVICE: [
            str(VENV_BIN / "gunicorn"), "saas.config.wsgi:application",
            "--bind", f"{HOST}:{WEB_PORT}", "--workers", "2", "--threads", "4",
            "--access-logfile", "-", "--error-logfile", "-",
            # Path without its query string and no Referer: a study search (?q=) or a QIDO-RS query carries
            # patient names and IDs, and logs carry ids only.
            "--access-logformat", ACCESS_LOG_FORMAT,
        ],
        # Three processes: a sync that follows a feed still arriving holds one, and archiving keeps two.
        WORKER_SERVICE: [
            str(VENV_BIN / "celery"), "-A", "saas.config", "worker", "-l", "info", "--concurrency", "3",
            "-Q", "django,sync",
        ],
        BEAT_SERVICE: [
            str(VENV_BIN / "celery"), "-A", "saas.config", "beat", "-l", "info",
            "--schedule", str(VAR / "celerybeat-schedule"),
        ],
        AI_WORKER_SERVICE: [
            str(VENV_BIN / "celery"), "-A", "inference_workers.app", "worker", "-l", "info",
            "-Q", "inference.cpu", "--autoscale", "2,1", "-n", "ai-cpu@%h",
        ],
    }
    # fmt: on
    # The workers get only the broker: no database, no Orthanc credentials (their trust zone).
    ai_env = {key: value for key, value in env.items() if not key.startswith(("DATABASE", "AWS_", "STRIPE"))}
    ai_env["INFERENCE_BROKER_URL"] = env["REDIS_URL"]
    ai_env["INFERENCE_TORCH_THREADS"] = "2"
    for service, argv in argvs.items():
        # Restarted when var/local.env changed (another database, new secrets).
        service.ensure(state, argv, env=ai_env if service is AI_WORKER_SERVICE else env, config=env_hash)

    if not wait_until(health_ok, HEALTH_TIMEOUT_S, interval=0.5):
        raise StackError(
            f"{WEB_SERVICE.name} did not answer 200 on /healthz in {HEALTH_TIMEOUT_S}s\n{log_tail(WEB_SERVICE.log)}"
        )


def tenants_down_command() -> bool:
    """Whether someone has written `manage.py tenants_down` yet (checked without Django)."""
    command = "management/commands/tenants_down.py"
    return any(ROOT.glob(f"tenants/{command}")) or any(ROOT.glob(f"saas/*/{command}"))


# --- subcommands -------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> None:
    with stack_lock():
        for directory in (VAR, RUN, LOGS):
            directory.mkdir(parents=True, exist_ok=True)
        state = load_state()
        secrets_ = load_secrets()

        pg_choice = choose_postgres(state)
        if pg_choice["mode"] == "reuse":
            if pg_private_down():
                note("(the private cluster is no longer used: DATABASE_URL names a server)")
            host, port = server_address(pg_choice["admin_url"])
            pg = {"mode": "reuse", "admin_url": pg_choice["admin_url"], "host": host, "port": port}
            note(f"reusing PostgreSQL at {host}:{port}")
        else:
            pg = pg_private_up(secrets_)
            host, port = pg["host"], pg["port"]
        ensure_roles_and_database(pg["admin_url"], host, port, secrets_)
        state["postgres"] = pg
        save_state(state)

        redis_choice = choose_redis(state)
        if redis_choice["mode"] == "reuse":
            if REDIS_SERVICE.stop():
                note("(the private redis-server is no longer used: REDIS_URL names a server)")
            state["redis"] = redis_choice
            note("reusing Redis from REDIS_URL")
        else:
            state["redis"] = redis_private_up()
        save_state(state)

        state["s3"] = s3_up(state, secrets_)
        state["stripe"] = stripe_up(state)
        save_state(state)

        local_env = {
            "READROOM_URL": f"http://{HOST}:{WEB_PORT}",
            "DATABASE_URL": role_url(APP_ROLE, secrets_["READROOM_APP_PASSWORD"], host, port),
            "DATABASE_OWNER_URL": role_url(OWNER_ROLE, secrets_["READROOM_OWNER_PASSWORD"], host, port),
            "REDIS_URL": state["redis"]["url"],
            "AWS_ENDPOINT_URL_S3": state["s3"]["url"],
            "AWS_ACCESS_KEY_ID": secrets_["S3_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": secrets_["S3_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "STRIPE_API_BASE": state["stripe"]["url"],
            "DJANGO_SECRET_KEY": secrets_["DJANGO_SECRET_KEY"],
            "READROOM_VAR_DIR": str(VAR),
        }
        write_env_file(
            LOCAL_ENV, local_env, "Written by scripts/stack.py up; load with: set -a; . var/local.env; set +a"
        )
        # The source fingerprint restarts web and workers after a code change: long-lived
        # processes would otherwise keep serving the code they started with.
        env_hash = hashlib.sha256(LOCAL_ENV.read_bytes() + source_fingerprint().encode()).hexdigest()

        django_up(state, local_env, env_hash, web=not args.no_web)
        save_state(state)
    print_status(state)


def cmd_down(_args: argparse.Namespace) -> None:
    with stack_lock():
        state = load_state()
        stop_services(list(DJANGO_SERVICES))
        if (ROOT / "manage.py").exists() and LOCAL_ENV.exists():
            if tenants_down_command():
                note("stopping tenant Orthancs (manage.py tenants_down)")
                try:
                    manage(["tenants_down"], django_env(read_env_file(LOCAL_ENV)), allow_unknown=True)
                except StackError as error:
                    note(f"warning: {error}")
            else:
                note("no manage.py tenants_down yet: tenant Orthancs started by tenants_up keep running")
        stop_services([STRIPE_SERVICE, S3_SERVICE, REDIS_SERVICE])
        pg_private_down()
        # Forget which servers were used: the next `up` decides again from the environment.
        for key in ("postgres", "redis", "s3", "stripe", "processes"):
            state.pop(key, None)
        save_state(state)
    note("down")


def component_rows(state: dict) -> list[tuple[str, bool, str, str]]:
    rows = []
    pg = state.get("postgres") or {}
    if pg.get("mode") == "reuse":
        host, port = pg["host"], pg["port"]
        rows.append(("postgres", pg_can_connect(pg["admin_url"]), f"reused {host}:{port}", ""))
    else:
        pid = PG_SERVICE.pid()
        rows.append(("postgres", PG_SERVICE.running(), "private", f"pid {pid}" if pid else ""))
        host, port = HOST, PG_PORT
    rows[-1] = rows[-1][:3] + (f"postgresql://{host}:{port}/{DB_NAME} {rows[-1][3]}".strip(),)

    rd = state.get("redis") or {}
    if rd.get("mode") == "reuse":
        rows.append(("redis", redis_answers(rd["url"]), "reused", redact(rd["url"])))
    else:
        pid = REDIS_SERVICE.pid()
        rows.append(
            (
                "redis",
                REDIS_SERVICE.running(),
                "private",
                f"{PRIVATE_REDIS_URL} pid {pid}" if pid else PRIVATE_REDIS_URL,
            )
        )

    for service, url in (
        (S3_SERVICE, f"http://{HOST}:{S3_PORT}"),
        (STRIPE_SERVICE, f"http://{HOST}:{STRIPE_PORT}"),
        (WEB_SERVICE, f"http://{HOST}:{WEB_PORT}"),
        (WORKER_SERVICE, ""),
        (BEAT_SERVICE, ""),
        (AI_WORKER_SERVICE, ""),
    ):
        pid = service.pid()
        rows.append((service.name, service.running(), "", f"{url} pid {pid}".strip() if pid else url))
    return rows


def redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def print_status(state: dict) -> None:
    for name, running, mode, detail in component_rows(state):
        print(f"  {name:<9} {'running' if running else 'stopped':<8} {mode:<22} {detail}")
    if LOCAL_ENV.exists():
        print(f"  env       {LOCAL_ENV}")


def cmd_status(_args: argparse.Namespace) -> None:
    print_status(load_state())


def cmd_env(_args: argparse.Namespace) -> None:
    print(LOCAL_ENV)
    if not LOCAL_ENV.exists():
        print("stack: var/local.env does not exist yet; run `make up`", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start what is not running")
    up.add_argument("--no-web", action="store_true", help="skip gunicorn and Celery (what tests need)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what up started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show each component").set_defaults(func=cmd_status)
    sub.add_parser("env", help="print the path of var/local.env").set_defaults(func=cmd_env)
    args = parser.parse_args()
    if shutil.which("runuser") is None and os.geteuid() == 0:
        print("stack: runuser (util-linux) is required", file=sys.stderr)
        sys.exit(1)
    try:
        args.func(args)
    except StackError as error:
        print(f"stack: error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
