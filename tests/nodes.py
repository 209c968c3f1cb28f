"""Two machines simulated on one: two `torchrun` launchers, each in a folder of its own.

Each "machine" is a folder holding a link `data` to the same photos, and runs its command there,
so what a node writes lands in its own folder. The launchers meet by c10d rendezvous on
127.0.0.1; node 0's hosts the store. c10d numbers the nodes by their address (`--local-addr`,
then the launcher's process id) and ignores `--node-rank`, so the nodes give addresses that
sort in their order: both mean this machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ADDRESSES = ("127.0.0.1", "localhost")  # sorted as text: node 0 first


def free_port() -> int:
    """A loopback port nothing listens on, kept from other programs until a server binds it.

    A port merely bound and closed again may be handed to the next `bind(("127.0.0.1", 0))`
    anywhere on the machine (another xdist worker's) before our server, seconds later, binds it.
    So the port is left in TIME_WAIT, as the end that closed a connection first: for a minute the
    kernel gives it to no `bind` to port 0 and no `connect`, while a server that sets
    SO_REUSEADDR, as `pawnet serve` and torchrun's store do, may bind it at once."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = listener.accept()
            accepted.close()  # closed first, so this end, on `port`, waits in TIME_WAIT
    return port


def node_command(node: int, port: int, args) -> list[str]:
    """Node `node`'s command: the documented two-machine command, with HOST0 = 127.0.0.1."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        f"pawnet-{port}",
        "--rdzv-conf",
        f"is_host={'true' if node == 0 else 'false'}",
        "--local-addr",
        ADDRESSES[node],
        "-m",
        "pawnet",
        "train",
        *map(str, args),
    ]


def start_nodes(root: Path, data: Path, args, env=None) -> list[subprocess.Popen]:
    """Both nodes' launchers, node N in root/nodeN (its output in root/nodeN.log), each in a
    session of its own so that it can be killed with its children."""
    port = free_port()
    launchers = []
    for node in (0, 1):
        home = root / f"node{node}"
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "data").exists():
            (home / "data").symlink_to(Path(data).resolve())
        log = open(root / f"node{node}.log", "a")  # noqa: SIM115 (closed with the child)
        launchers.append(
            subprocess.Popen(
                node_command(node, port, args),
                cwd=home,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        )
        log.close()
    return launchers


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it. torchrun starts its workers in sessions of their own,
    so killing the launcher's process group would leave them running."""
    children = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    except FileNotFoundError:  # it ended meanwhile
        pass
    return [pid, *(d for c in children for d in descendants(c))]


def kill_node(launcher: subprocess.Popen) -> None:
    """SIGKILL to a launcher's process group and to its workers' groups at once, as when its
    machine dies."""
    groups = set()
    for pid in descendants(launcher.pid):
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            groups.add(os.getpgid(pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    launcher.wait()
