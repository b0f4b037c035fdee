"""A fake Azure Files endpoint (`<account>.file.core.windows.net`) over real HTTPS.

mlos_bench's own `AzureFileShareService` (the shipped `service-fileshare.jsonc`, class
unchanged) talks to it with the real azure-storage-file-share SDK: its share URL is fixed to
`https://<account>.file.core.windows.net/<share>`, so the tests route that host through a
local HTTPS proxy (`proxy.ForwardProxy`, via the standard `HTTPS_PROXY` variable, honoured by
the SDK's requests transport) to this server, whose certificate is signed by the tests' CA.

What is served is the REST subset that service uses, as the Files REST reference documents
it: directory properties (`?restype=directory`), create directory, list directories and files
(`?restype=directory&comp=list`, XML), create file (`x-ms-type: file`), put range
(`?comp=range`), get file (ranged, 206 / 416 for an empty file), file properties (HEAD), with
the x-ms-error-code errors (ResourceNotFound, ParentNotFound, ResourceAlreadyExists). OAuth
requests must carry `x-ms-file-request-intent: backup`, as the service requires.

A share's files are real files in `<root>/shares/<account>/<share>` (mode 0755, as a cifs mount
shows them), so the fake VMs' `mount -t cifs` sees what was uploaded, and the other way round.
`<root>/keys/<account>` holds the SHA-256 of the account key, which `mount.cifs` checks.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from tests.fake_arm.tls import TlsFiles, tls_server

SUFFIX = ".file.core.windows.net"
_ERRORS = {
    "ResourceNotFound": (404, "The specified resource does not exist."),
    "ParentNotFound": (404, "The specified parent path does not exist."),
    "ShareNotFound": (404, "The specified share does not exist."),
    "ResourceAlreadyExists": (409, "The specified resource already exists."),
    "InvalidRange": (416, "The range specified is invalid for the current size of the resource."),
    "AuthenticationFailed": (401, "Server failed to authenticate the request."),
    "MissingRequiredHeader": (
        400,
        "An HTTP header that's mandatory for this request is not specified.",
    ),
}


class FilesStore:
    """Storage accounts, their keys and shares: directories on disk."""

    def __init__(self, root: Path, token: str) -> None:
        self.root = root
        self.token = token
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str, str]] = []  # (method, account, path?query)
        (root / "shares").mkdir(parents=True, exist_ok=True)
        (root / "keys").mkdir(exist_ok=True)

    def create_share(self, account: str, share: str, key: str) -> Path:
        """A share that exists (Azure Files shares are made before a run, e.g. by setup-rg)."""
        folder = self.root / "shares" / account / share
        folder.mkdir(parents=True, exist_ok=True)
        (self.root / "keys" / account).write_text(hashlib.sha256(key.encode()).hexdigest())
        return folder

    def share(self, account: str, share: str) -> Path:
        return self.root / "shares" / account / share


def _stamp(path: Path) -> dict[str, str]:
    stat = path.stat()
    when = datetime.fromtimestamp(stat.st_mtime, UTC)
    return {
        "ETag": f'"0x{int(stat.st_mtime_ns):X}"',
        "Last-Modified": format_datetime(when, usegmt=True),
        "x-ms-server-encrypted": "true",
        "x-ms-file-attributes": "Directory" if path.is_dir() else "Archive",
        "x-ms-file-creation-time": when.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
        "x-ms-file-last-write-time": when.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
        "x-ms-file-change-time": when.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
        "x-ms-file-permission-key": "4066528134148476695*1",
        "x-ms-file-id": str(stat.st_ino),
        "x-ms-file-parent-id": str(path.parent.stat().st_ino),
    }


class FakeFiles:
    """Serve a `FilesStore` over TLS on 127.0.0.1 (an ephemeral port) in a daemon thread."""

    def __init__(self, store: FilesStore, tls: TlsFiles) -> None:
        self.store = store
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = fake.dispatch(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self.send_response(status)
                headers.setdefault("Content-Length", str(len(payload)))
                headers["x-ms-request-id"] = str(uuid.uuid4())
                headers["x-ms-version"] = self.headers.get("x-ms-version", "2025-11-05")
                headers["Date"] = format_datetime(datetime.now(UTC), usegmt=True)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_HEAD = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = tls_server(Handler, tls)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- dispatch ------------------------------------------------------------------------------

    def dispatch(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        host = headers.get("host", "").split(":")[0].lower()
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        account = host.removesuffix(SUFFIX)
        with self.store.lock:
            self.store.requests.append((method, account, target))
        if not host.endswith(SUFFIX):
            return _error("ResourceNotFound")
        if headers.get("authorization") != f"Bearer {self.store.token}":
            return _error("AuthenticationFailed")
        if headers.get("x-ms-file-request-intent") != "backup":  # required with OAuth
            return _error("MissingRequiredHeader")
        parts = [unquote(p) for p in url.path.split("/") if p]
        if not parts or not self.store.share(account, parts[0]).is_dir():
            return _error("ShareNotFound")
        share = self.store.share(account, parts[0])
        path = share.joinpath(*parts[1:]) if parts[1:] else share
        if (share not in path.parents and path != share) or ".." in parts:
            return _error("ResourceNotFound")
        with self.store.lock:
            if query.get("restype") == "directory":
                return self._directory(method, query, share, path, parts)
            return self._file(method, query, headers, path, body)

    def _directory(
        self, method: str, query: dict[str, str], share: Path, path: Path, parts: list[str]
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "PUT":
            if path.exists():
                return _error("ResourceAlreadyExists")
            if not path.parent.is_dir():
                return _error("ParentNotFound")
            path.mkdir(mode=0o755)
            return 201, _stamp(path), b""
        if not path.is_dir():
            return _error("ResourceNotFound" if path.parent.is_dir() else "ParentNotFound")
        if query.get("comp") == "list":
            return 200, {"Content-Type": "application/xml"}, _listing(share, path, parts)
        return 200, _stamp(path), b""

    def _file(
        self,
        method: str,
        query: dict[str, str],
        headers: dict[str, str],
        path: Path,
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "PUT" and query.get("comp") == "range":
            if not path.is_file():
                return _error("ResourceNotFound")
            start, end = _range(headers.get("x-ms-range") or headers.get("range", ""))
            with open(path, "r+b") as handle:
                handle.seek(start)
                handle.write(body[: end - start + 1])
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            return 201, {**_stamp(path), "Content-MD5": md5}, b""
        if method == "PUT":
            if not path.parent.is_dir():
                return _error("ParentNotFound")
            if path.is_dir():
                return _error("ResourceAlreadyExists")
            size = int(headers.get("x-ms-content-length", "0"))
            with open(path, "wb") as handle:
                handle.truncate(size)
            path.chmod(0o755)  # what a cifs mount (file_mode=0755) shows
            return 201, _stamp(path), b""
        if not path.is_file():
            return _error("ResourceNotFound" if path.parent.is_dir() else "ParentNotFound")
        data = path.read_bytes()
        stamp = {**_stamp(path), "x-ms-type": "File", "Accept-Ranges": "bytes"}
        stamp["Content-Type"] = "application/octet-stream"
        if method == "HEAD":
            return 200, {**stamp, "Content-Length": str(len(data))}, b""
        wanted = headers.get("x-ms-range") or headers.get("range")
        if not wanted:
            return 200, stamp, data
        start, end = _range(wanted)
        if start >= len(data):
            status, headers_, payload = _error("InvalidRange")
            return status, {**headers_, "Content-Range": f"bytes */{len(data)}"}, payload
        end = min(end, len(data) - 1)
        stamp["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return 206, stamp, data[start : end + 1]


def _range(header: str) -> tuple[int, int]:
    first, _, last = header.removeprefix("bytes=").partition("-")
    return int(first or 0), int(last) if last else 2**62


def _listing(share: Path, path: Path, parts: list[str]) -> bytes:
    entries = []
    for child in sorted(path.iterdir()):
        name = escape(child.name)
        if child.is_dir():
            entries.append(
                f"<Directory><Name>{name}</Name><FileId>{child.stat().st_ino}</FileId>"
                "<Properties /></Directory>"
            )
        else:
            size = child.stat().st_size
            entries.append(
                f"<File><Name>{name}</Name><FileId>{child.stat().st_ino}</FileId>"
                f"<Properties><Content-Length>{size}</Content-Length></Properties></File>"
            )
    directory = escape("/".join(parts[1:]))
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<EnumerationResults ServiceEndpoint="https://{share.parent.name}{SUFFIX}/" '
        f'ShareName="{escape(share.name)}" DirectoryPath="{directory}">'
        f"<Entries>{''.join(entries)}</Entries><NextMarker /></EnumerationResults>"
    ).encode()


def _error(code: str) -> tuple[int, dict[str, str], bytes]:
    status, message = _ERRORS[code]
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{escape(message)}\nRequestId:{uuid.uuid4()}"
        f"\nTime:{datetime.now(UTC).isoformat()}</Message></Error>"
    ).encode()
    return status, {"x-ms-error-code": code, "Content-Type": "application/xml"}, body
