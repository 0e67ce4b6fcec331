"""The `docker` backend: one fresh container per worker, through the Docker SDK.

The container runs the `vitgrade` image (which holds Python, torch and vitgrade, and never the
hidden tests or the reference) with no network, memory equal to memory+swap, a pids limit, a
CPU quota, a read-only root filesystem with tmpfs /tmp and working directory, all capabilities
dropped, no new privileges, a non-root user and capped logs. The staged worker runtime is
mounted read-only, so the worker code is the grader's own. The channel is the container's
attached stdin/stdout; stderr (the student's prints) is demultiplexed into the capped capture.
The wall timeout is enforced from the host by the session, which kills the container.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Any

from .base import (
    BOOT,
    Backend,
    Isolation,
    Limits,
    OutputCapture,
    WorkerProcess,
    scrubbed_env,
)

IMAGE = os.environ.get("VITGRADE_DOCKER_IMAGE", "vitgrade:latest")
RUNTIME = "/opt/vitgrade"
HOME = "/home/student"
USER = "10001:10001"  # the image's non-root user


def client() -> Any:
    import docker

    return docker.from_env(timeout=30)


def probe() -> str | None:
    """None if an engine answers and the image exists, else why not."""
    try:
        engine = client()
        engine.ping()
        engine.images.get(IMAGE)
    except Exception as exc:  # the SDK raises connection, API and not-found errors alike
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


class ContainerWorker(WorkerProcess):
    """A worker container: frames go out on its stdin; its stdout (frames) and stderr (prints)
    arrive multiplexed on the attach socket and are split here."""

    def __init__(self, container: Any, capture: OutputCapture):
        self.container = container
        self.sock = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        raw: socket.socket = getattr(self.sock, "_sock", self.sock)
        self.raw = raw
        container.start()
        self.send_fd = raw.fileno()
        self.recv_fd, self.pipe_w = os.pipe()
        self.capture = capture
        self.code: int | None = None
        self.demuxer = threading.Thread(target=self.demux, daemon=True)
        self.demuxer.start()

    def demux(self) -> None:
        """Docker's stream format: an 8-byte header (stream id, 3 zero bytes, big-endian size)."""
        buffer = b""
        try:
            while True:
                chunk = self.raw.recv(1 << 20)
                if not chunk:
                    break
                buffer += chunk
                while len(buffer) >= 8:
                    stream, size = buffer[0], struct.unpack(">I", buffer[4:8])[0]
                    if len(buffer) < 8 + size:
                        break
                    payload, buffer = buffer[8 : 8 + size], buffer[8 + size :]
                    if stream == 1:
                        view = memoryview(payload)
                        while view:
                            view = view[os.write(self.pipe_w, view) :]
                    else:
                        self.capture.feed(payload)
        except OSError:
            pass
        finally:
            os.close(self.pipe_w)

    def alive(self) -> bool:
        self.container.reload()
        return bool(self.container.attrs["State"]["Running"])

    def exit_code(self, grace: float) -> int | None:
        try:
            code = int(self.container.wait(timeout=grace)["StatusCode"])
        except Exception:  # the SDK raises requests.ConnectionError on timeout
            return None
        return -(code - 128) if code > 128 else code

    def oom_killed(self) -> bool | None:
        self.container.reload()
        return bool(self.container.attrs["State"]["OOMKilled"])

    def kill(self) -> int:
        try:
            self.container.kill()
        except Exception:  # already stopped
            pass
        code = self.exit_code(grace=30) or 0
        try:
            self.raw.close()
        except OSError:
            pass
        self.demuxer.join(timeout=5)
        try:
            os.close(self.recv_fd)
        except OSError:
            pass
        self.container.remove(force=True)
        return code


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, limits: Limits | None = None):
        super().__init__(limits)
        reason = probe()
        if reason:
            raise RuntimeError(f"the docker backend needs a reachable engine and the {IMAGE} image: {reason}")
        self.engine = client()
        for item in [self.scratch, *self.scratch.rglob("*")]:
            os.chmod(item, 0o755 if item.is_dir() else 0o644)

    def spawn(self, capture: OutputCapture) -> WorkerProcess:
        from docker.types import LogConfig, Ulimit

        limits = self.limits
        container = self.engine.containers.create(
            IMAGE,
            entrypoint=["python", "-I", "-B", "-c", BOOT, RUNTIME],
            stdin_open=True,
            tty=False,
            user=USER,
            working_dir=HOME,
            environment={
                **scrubbed_env(HOME, limits.threads),
                "TMPDIR": "/tmp",
                "PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
            },
            network_mode="none",
            mem_limit=limits.memory,
            memswap_limit=limits.memory,
            pids_limit=limits.pids,
            nano_cpus=int(limits.threads * 1e9),
            read_only=True,
            # half the disk quota each, so that together they hold the quota (tmpfs sizes are hard limits)
            tmpfs={
                "/tmp": f"size={limits.scratch // 2},mode=1777",
                HOME: f"size={limits.scratch // 2},mode=0700,uid=10001,gid=10001",
            },
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            volumes={str(self.runtime): {"bind": RUNTIME, "mode": "ro"}},
            # RLIMIT_DATA (anonymous memory) stands in for the address-space limit docker lacks
            ulimits=[
                Ulimit(name="data", soft=limits.memory, hard=limits.memory),
                Ulimit(name="fsize", soft=limits.file_size, hard=limits.file_size),
                Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
                Ulimit(name="core", soft=0, hard=0),
            ],  # fmt: skip
            log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
            labels={"vitgrade": "worker"},
        )
        return ContainerWorker(container, capture)

    def isolation(self) -> Isolation:
        return Isolation(
            backend=self.name,
            network="none (docker network_mode none)",
            filesystem=f"the {IMAGE} image (no hidden tests, no reference), read-only, with tmpfs /tmp and working directory",
            user=f"{USER} in the container, all capabilities dropped, no new privileges",
            pid_namespace=True,
            limits={
                "memory_bytes": self.limits.memory,
                "memswap_bytes": self.limits.memory,
                "data_bytes": self.limits.memory,
                "pids": self.limits.pids,
                "cpus": self.limits.threads,
                "file_size_bytes": self.limits.file_size,
                "scratch_bytes": self.limits.scratch,
                "open_files": self.limits.open_files,
                "logs": "json-file, 1 MB",
            },  # fmt: skip
        )
