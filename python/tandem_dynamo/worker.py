"""The tandem worker's gRPC API, from proto/worker.proto itself (compiled at import by
grpcio-tools, so the bridge never carries a stale copy of the generated code)."""

import asyncio
import logging
import os
import sys
from pathlib import Path

import grpc

log = logging.getLogger("tandem_dynamo")


def _proto_dir() -> Path:
    """proto/ of this repository, or $TANDEM_PROTO_DIR (a container copies it elsewhere)."""
    env = os.environ.get("TANDEM_PROTO_DIR")
    d = Path(env) if env else Path(__file__).resolve().parents[2] / "proto"
    if not (d / "worker.proto").is_file():
        raise SystemExit(f"tandem_dynamo: {d}/worker.proto not found (set TANDEM_PROTO_DIR)")
    return d


sys.path.insert(0, str(_proto_dir()))
pb, services = grpc.protos_and_services("worker.proto")


class Tls:
    """TLS to a worker started with `--tls-*`, as tandem's frontend speaks it: the CA that
    signed the worker's certificate, and a client certificate when the worker requires one."""

    def __init__(self, ca: str, cert: "str | None", key: "str | None", domain: "str | None"):
        if (cert is None) != (key is None):
            raise SystemExit("tandem_dynamo: --worker-tls-cert and --worker-tls-key go together")
        read = lambda p: Path(p).read_bytes() if p else None
        try:
            self.ca, self.cert, self.key = read(ca), read(cert), read(key)
        except OSError as e:
            raise SystemExit(f"tandem_dynamo: cannot read a TLS file: {e}")
        self.domain = domain

    def credentials(self):
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    def options(self):
        # The name the worker's certificate carries, when it is not the address's host.
        return [("grpc.ssl_target_name_override", self.domain)] if self.domain else []


class Worker:
    """A client of one tandem worker."""

    def __init__(self, addr: str, tls: "Tls | None" = None):
        self.addr = addr
        self.tls = tls
        self.channel = self.channel_to(addr)
        self.stub = services.WorkerStub(self.channel)

    def channel_to(self, addr: str):
        """A channel to this worker or to another of the deployment (a prefill worker that
        holds a request's KV), with the same TLS settings."""
        if self.tls is None:
            return grpc.aio.insecure_channel(addr)
        return grpc.aio.secure_channel(addr, self.tls.credentials(), self.tls.options())

    async def wait_ready(self, timeout_s: float) -> "pb.ModelInfoResponse":
        """Waits until the worker answers Health with ready (it may still be loading its
        model, or not be started yet); its ModelInfo."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        said = False
        while True:
            try:
                h = await self.stub.Health(pb.HealthRequest(), timeout=2)
                if h.ready:
                    return await self.stub.ModelInfo(pb.ModelInfoRequest(), timeout=5)
            except grpc.aio.AioRpcError as e:
                if not said:
                    log.info("waiting for the tandem worker at %s (%s)", self.addr, e.code().name)
                    said = True
            if asyncio.get_running_loop().time() > deadline:
                raise SystemExit(
                    f"tandem_dynamo: the worker at {self.addr} was not ready within "
                    f"{timeout_s:.0f} s")
            await asyncio.sleep(0.5)

    async def alive(self) -> bool:
        try:
            await self.stub.Health(pb.HealthRequest(), timeout=2)
            return True
        except grpc.aio.AioRpcError:
            return False

    async def load(self) -> "pb.LoadResponse":
        return await self.stub.Load(pb.LoadRequest(), timeout=2)
