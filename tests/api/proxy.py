"""A TCP proxy in front of a server that a test can slow down or cut, as a network would: in front of the
kube-apiserver, the API's view of the cluster falls behind (its watch stalls) or breaks, while everything
else goes on; in front of the REST API, mdops loses its event stream.

    with Proxy(cluster.server) as proxy:
        kubeconfig = proxy.kubeconfig(cluster.kubeconfig, tmp_path / "through-proxy")
        proxy.stall()   # connections open now stop passing bytes; new ones flow
        proxy.resume()
        proxy.cut()     # every connection is closed and new ones are refused, until resume()
"""

from __future__ import annotations

import select
import socket
import threading
import urllib.parse
from pathlib import Path

import yaml

from devcluster.private import write_private


class Proxy:
    def __init__(self, server: str):
        target = urllib.parse.urlsplit(server)
        self.target = (target.hostname, target.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._refusing = False
        self._closed = False
        self.refused = 0  # connections refused while cut: a witness that a client asked meanwhile
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def kubeconfig(self, original: Path, path: Path) -> Path:
        """A copy of ``original`` whose API server is this proxy (on loopback, as the API requires)."""
        config = yaml.safe_load(Path(original).read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        return write_private(path, yaml.safe_dump(config))

    def stall(self) -> None:
        """The connections open now pass no more bytes (until resume); new connections flow."""
        with self._lock:
            for _, _, flowing in self._pairs:
                flowing.clear()

    def cut(self) -> None:
        """Close every connection and refuse new ones until resume: the API server is unreachable."""
        with self._lock:
            self._refusing = True
            pairs, self._pairs = self._pairs, []
        for client, upstream, flowing in pairs:
            flowing.set()
            for sock in (client, upstream):
                sock.close()

    def resume(self) -> None:
        with self._lock:
            self._refusing = False
            for _, _, flowing in self._pairs:
                flowing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._refusing:
                    self.refused += 1
                    client.close()
                    continue
                upstream = socket.create_connection(self.target)
                flowing = threading.Event()
                flowing.set()
                self._pairs.append((client, upstream, flowing))
            threading.Thread(target=self._pump, args=(client, upstream, flowing), daemon=True).start()

    @staticmethod
    def _pump(client: socket.socket, upstream: socket.socket, flowing: threading.Event) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    flowing.wait()
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # closed by cut() or by a peer (ValueError: closed while in select)
            return
        finally:
            for sock in peers:
                sock.close()
