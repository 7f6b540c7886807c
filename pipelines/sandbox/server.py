"""The sandbox HTTP server: a simulated country's files served over the real source APIs.

``start_sandbox(data_dir)`` runs a standard-library ``ThreadingHTTPServer`` in a background
thread (``port=0`` picks a free port) and returns a :class:`Sandbox` (``url``, ``port``,
``stop()``, a context manager). ``serve_forever`` and ``run_sandbox_cli`` block, for the
``healthpipe sandbox`` command.

Mounted APIs (each documented in its module):

- ``/dhis2``        DHIS2 Web API (:mod:`pipelines.sandbox.dhis2_api`)
- ``/fhir/<server>`` FHIR R4 REST + Bulk Data, one per ``fhir/<server>/`` folder
  (:mod:`pipelines.sandbox.fhir_api`)
- ``/odk``          ODK Central REST + OData (:mod:`pipelines.sandbox.odk_api`)
- ``/kobo``         KoboToolbox v2 (:mod:`pipelines.sandbox.kobo_api`)
- ``/``             an index of the above (JSON, no auth)
- ``/_sandbox/increments`` the sandbox's own control: ``GET`` lists the increments
  (``increments/<n>/`` folders of the simulator) and the one served, ``POST
  /_sandbox/increments/<n>`` serves the data as it is after increment ``n`` (no auth; the
  sandbox listens on loopback); ``?warm=1`` reads the DHIS2 data values before answering,
  so that the next requests are timed without the sandbox's file reading

Every request goes: route -> auth (unless the route is public) -> fault draw (data routes
only, see :mod:`pipelines.sandbox.faults`) -> handler. HTTP/1.1 keep-alive is supported.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pipelines.sandbox.auth import Credentials
from pipelines.sandbox.dhis2_api import Dhis2Api, Dhis2Store
from pipelines.sandbox.faults import (
    DISABLE_HEADER,
    Fault,
    FaultConfig,
    FaultInjector,
    disabled_by,
)
from pipelines.sandbox.fhir_api import FhirApi, FhirSettings, FhirStore
from pipelines.sandbox.kobo_api import KoboApi, KoboSettings, KoboStore
from pipelines.sandbox.odk_api import OdkApi, OdkSettings, OdkStore
from pipelines.sandbox.routing import Api, ApiError, Request, Response, json_response, match

SOURCE_FOLDERS = ("dhis2", "fhir", "odk", "kobo")


@dataclass(frozen=True)
class SandboxSettings:
    """Paging and Bulk Data behaviour of the APIs (tests make waits and pages small)."""

    fhir: FhirSettings = field(default_factory=FhirSettings)
    odk: OdkSettings = field(default_factory=OdkSettings)
    kobo: KoboSettings = field(default_factory=KoboSettings)


class SandboxApp:
    """The APIs over one data folder, and the request pipeline around them."""

    def __init__(
        self,
        data_dir: Path,
        credentials: Credentials,
        faults: FaultConfig | None,
        settings: SandboxSettings,
    ) -> None:
        if not any((data_dir / name).is_dir() for name in SOURCE_FOLDERS):
            raise FileNotFoundError(
                f"{data_dir} holds no source data (none of {', '.join(SOURCE_FOLDERS)}/): "
                "write some with `healthpipe simulate --out DIR`"
            )
        self.data_dir = data_dir
        self.credentials = credentials
        increments = data_dir / "increments"
        self.fhir = FhirApi(FhirStore(data_dir / "fhir", increments), credentials, settings.fhir)
        self.odk_store = OdkStore(data_dir / "odk" / "projects", increments)
        self.kobo_store = KoboStore(data_dir / "kobo" / "assets", increments)
        self.dhis2_store = Dhis2Store(data_dir / "dhis2", increments)
        self.increment = 0
        self.apis: list[Api] = [
            Dhis2Api(self.dhis2_store, credentials),
            self.fhir,
            OdkApi(self.odk_store, credentials, settings.odk),
            KoboApi(self.kobo_store, credentials, settings.kobo),
        ]
        self.injector = FaultInjector(faults) if faults is not None and faults.active else None

    def handle(self, request: Request) -> tuple[Response, Fault | None]:
        """The response to a request, and the delivery fault (reset, truncate, slow) to
        apply while sending it."""
        if request.path in ("", "/"):
            return self.index(request), None
        if request.path.startswith("/_sandbox/"):
            return self.control(request), None
        found = match(self.apis, request.method, request.path)
        if found is None:
            return json_response({"error": f"No API at {request.path}; see /"}, 404), None
        if isinstance(found, Response):
            return found, None
        api, route = found.api, found.route
        request = replace(request, params=found.params)
        if not route.public:
            refused = api.authenticate(request)
            if refused is not None:
                return refused, None
        fault = None
        if route.faultable and self.injector is not None and not disabled_by(request.headers):
            fault = self.injector.draw()
        if fault is not None and fault.status is not None:
            message = "Too many requests" if fault.status == 429 else "Service unavailable"
            headers = [("Retry-After", fault.retry_after or "1")]
            return api.error(fault.status, f"{message} (sandbox fault injection)", headers), None
        try:
            return route.handler(request), fault
        except ApiError as exc:
            return exc.response, fault
        except Exception as exc:  # a bug must still answer in the protocol's words
            traceback.print_exc(file=sys.stderr)
            return api.error(500, f"Internal sandbox error: {type(exc).__name__}: {exc}"), None

    def available_increments(self) -> list[int]:
        """The increment numbers any source has a folder for (``increments/<n>/<source>``)."""
        found: set[int] = set()
        for store in (self.dhis2_store, self.fhir.store, self.odk_store, self.kobo_store):
            found.update(store.available_increments())
        return sorted(found)

    def apply_increment(self, number: int) -> None:
        """Serve every API's data as it is after the simulator's increment ``number``
        (0: the base data). A source with no folder for an increment keeps its data."""
        if number and number not in self.available_increments():
            raise ValueError(f"no increment {number} (have {self.available_increments()})")
        for store in (self.fhir.store, self.odk_store, self.kobo_store):
            store.set_increment(number)
        # The DHIS2 store refuses numbers it has no folder for: give it its latest one.
        dhis2 = [n for n in self.dhis2_store.available_increments() if n <= number]
        self.dhis2_store.set_increment(max(dhis2, default=0))
        self.increment = number

    def control(self, request: Request) -> Response:
        """``GET /_sandbox/increments`` and ``POST /_sandbox/increments/<n>``."""
        parts = request.path.strip("/").split("/")
        if parts[:2] != ["_sandbox", "increments"] or len(parts) > 3:
            return json_response({"error": f"No such control: {request.path}"}, 404)
        if len(parts) == 3:
            if request.method != "POST" or not parts[2].isdigit():
                return json_response({"error": "POST /_sandbox/increments/<n>"}, 405)
            try:
                self.apply_increment(int(parts[2]))
            except ValueError as exc:
                return json_response({"error": str(exc)}, 404)
            if request.arg("warm") and self.dhis2_store.available:
                self.dhis2_store.warm()
        return json_response(
            {
                "current": self.increment,
                "available": self.available_increments(),
            }
        )

    def index(self, request: Request) -> Response:
        """``GET /``: where each API lives (no auth: it holds no data)."""
        base = request.base_url
        apis: dict[str, Any] = {}
        if self.dhis2_store.available:
            apis["dhis2"] = f"{base}/dhis2"
        for name in self.fhir.store.servers:
            apis[f"fhir/{name}"] = f"{base}/fhir/{name}"
        if self.odk_store.projects():
            apis["odk"] = f"{base}/odk"
        if self.kobo_store.uids():
            apis["kobo"] = f"{base}/kobo"
        return json_response({"name": "healthpipe sandbox", "apis": apis})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "healthpipe-sandbox/1"
    timeout = 60  # idle keep-alive connections end instead of holding a thread forever
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
        # and the client's delayed ACK stall every keep-alive response by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        host = headers.get("host") or self.server.address_text
        request = Request(
            method=self.command,
            path=unquote(parts.path),
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=headers,
            body=body,
            base_url=f"http://{host}",
        )
        response, fault = self.server.app.handle(request)
        self._send(response, fault)

    def _send(self, response: Response, fault: Fault | None) -> None:
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.slow_seconds)
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if fault is not None and fault.kind in ("reset", "truncate"):
            # Half the body under a Content-Length that promised all of it.
            self.wfile.write(response.body[: len(response.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            if fault.kind == "reset":
                self._abort()
            return
        self.wfile.write(response.body)

    def _abort(self) -> None:
        """Close with a TCP reset (RST) rather than an orderly FIN: linger 0, then close
        every handle on the socket so the close happens now."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: SandboxApp, verbose: bool) -> None:
        self.app = app
        self.verbose = verbose
        super().__init__(address, _Handler)
        self.address_text = f"{address[0]}:{self.server_port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a timeout, a test of a slow answer) is not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


def _make_server(
    data_dir: Path,
    host: str,
    port: int,
    faults: FaultConfig | str | None,
    credentials: Credentials | None,
    settings: SandboxSettings | None,
    verbose: bool,
) -> _Server:
    config = FaultConfig.parse(faults) if isinstance(faults, str) else faults
    app = SandboxApp(
        Path(data_dir), credentials or Credentials(), config, settings or SandboxSettings()
    )
    return _Server((host, port), app, verbose)


class Sandbox:
    """A running sandbox. ``url`` is its base (``http://127.0.0.1:<port>``)."""

    def __init__(self, server: _Server, thread: threading.Thread | None) -> None:
        self._server = server
        self._thread = thread
        self.app = server.app
        host, port = server.server_address[:2]
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else str(host)
        self.port = int(port)
        self.url = f"http://{self.host}:{self.port}"

    @property
    def credentials(self) -> Credentials:
        return self.app.credentials

    @property
    def injector(self) -> FaultInjector | None:
        return self.app.injector

    @property
    def dhis2_url(self) -> str:
        return f"{self.url}/dhis2"

    @property
    def odk_url(self) -> str:
        return f"{self.url}/odk"

    @property
    def kobo_url(self) -> str:
        return f"{self.url}/kobo"

    def fhir_url(self, server: str) -> str:
        return f"{self.url}/fhir/{server}"

    @property
    def fhir_servers(self) -> list[str]:
        return list(self.app.fhir.store.servers)

    def apply_increment(self, number: int) -> None:
        """Serve every API's data as it is after the simulator's ``increments/<number>``
        (0 goes back to the base data)."""
        self.app.apply_increment(number)

    def describe(self) -> str:
        """Base URLs and credentials, as the CLI prints them."""
        creds = self.credentials
        lines = [f"healthpipe sandbox: {self.app.data_dir} at {self.url}"]
        if self.app.dhis2_store.available:
            lines.append(
                f"  DHIS2        {self.dhis2_url}  basic {creds.dhis2_username} / "
                f"{creds.dhis2_password}, or Authorization: ApiToken {creds.dhis2_api_token}"
            )
        for name in self.fhir_servers:
            auth = f"Authorization: Bearer {creds.fhir_token}" if creds.fhir_token else "no auth"
            lines.append(f"  FHIR {name:<7} {self.fhir_url(name)}  {auth}")
        if self.app.odk_store.projects():
            lines.append(
                f"  ODK Central  {self.odk_url}  {creds.odk_email} / {creds.odk_password} "
                "(basic, or POST /v1/sessions for a bearer token)"
            )
        if self.app.kobo_store.uids():
            lines.append(f"  KoboToolbox  {self.kobo_url}  Authorization: Token {creds.kobo_token}")
        if self.injector is not None:
            lines.append(
                f"  faults: {self.injector.config.describe()} "
                f"(send {DISABLE_HEADER}: off to skip them)"
            )
        return "\n".join(lines)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_sandbox(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: FaultConfig | str | None = None,
    credentials: Credentials | None = None,
    settings: SandboxSettings | None = None,
    verbose: bool = False,
) -> Sandbox:
    """Serve ``data_dir`` (a ``healthpipe simulate`` output folder) in a background thread."""
    server = _make_server(data_dir, host, port, faults, credentials, settings, verbose)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox", daemon=True
    )
    thread.start()
    return Sandbox(server, thread)


def serve_forever(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    faults: FaultConfig | str | None = None,
    credentials: Credentials | None = None,
    settings: SandboxSettings | None = None,
    verbose: bool = True,
) -> None:
    """Serve ``data_dir`` in this thread until interrupted (Ctrl+C)."""
    server = _make_server(data_dir, host, port, faults, credentials, settings, verbose)
    sandbox = Sandbox(server, None)
    print(sandbox.describe(), flush=True)
    if threading.current_thread() is threading.main_thread():
        # `docker stop` and service managers send SIGTERM: stop as cleanly as on Ctrl+C.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _data_folder(data_dir: Path | None) -> Iterator[Path]:
    """The folder to serve: the one given, or a freshly simulated default country."""
    if data_dir is not None:
        yield data_dir
        return
    from pipelines.simulate import simulate

    with tempfile.TemporaryDirectory(prefix="healthpipe-sandbox-") as folder:
        print(f"simulating the default country into {folder} ...", flush=True)
        simulate(Path(folder))
        yield Path(folder)


def run_sandbox_cli(
    data_dir: Path | None, port: int = 8080, faults_spec: str | None = None, host: str = "127.0.0.1"
) -> int:
    """``healthpipe sandbox [--data DIR] [--port N] [--faults SPEC]``: print the base URLs and
    credentials, then serve until Ctrl+C. Without ``--data`` the default country is simulated
    into a temporary folder first. Returns the exit code."""
    try:
        faults = FaultConfig.parse(faults_spec) if faults_spec else None
    except ValueError as exc:
        print(f"healthpipe sandbox: --faults: {exc}", file=sys.stderr)
        return 2
    try:
        with _data_folder(data_dir) as folder:
            serve_forever(folder, host=host, port=port, faults=faults)
    except (FileNotFoundError, OSError) as exc:
        print(f"healthpipe sandbox: {exc}", file=sys.stderr)
        return 2
    return 0
