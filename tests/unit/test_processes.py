"""The ports the local stack and the tests give their servers (devcluster.processes.free_port)."""

import errno
import socket
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devcluster.processes import free_port


def test_a_free_port_is_taken_by_no_other_socket_and_refused_until_our_server_listens_on_it(tmp_path):
    port = free_port()
    with socket.socket() as other, pytest.raises(OSError) as refused:
        other.bind(("127.0.0.1", port))
    assert refused.value.errno == errno.EADDRINUSE
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()

    (tmp_path / "index.html").write_text("ours")
    handler = lambda *args: SimpleHTTPRequestHandler(*args, directory=str(tmp_path))  # noqa: E731
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as server:  # binds with SO_REUSEADDR
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as response:
            assert response.read() == b"ours"
        server.shutdown()


def test_a_preferred_port_is_given_when_free_and_another_when_busy():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        busy = probe.getsockname()[1]
        assert free_port(busy) != busy
    assert free_port(busy) == busy  # let go: free again
    assert free_port(busy) != busy  # now held by this process
