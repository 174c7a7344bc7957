"""A real single-node Apache Kafka broker (KRaft) from Maven Central jars, no Docker.

    kafka = LocalKafka()
    kafka.assemble()                  # once per machine: mvn resolves ~45 jars into a cache
    bootstrap = kafka.start()         # "127.0.0.1:PORT", ~3 s
    kafka.restart()                   # same ports, same data (clean shutdown)
    kafka.kill(); kafka.restart()     # kill -9, then recover
    kafka.close()                     # stop and delete the temporary work dir

See README.md "Kafka without Docker".
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import signal
import string
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from deploy.local._proc import (
    LOOPBACK,
    InfraError,
    LocalServer,
    ToolMissingError,
    can_connect,
    elapsed,
    free_ports,
    log,
    port_is_free,
    read_from,
    run_checked,
    spawn,
    terminate_group,
)

KAFKA_DIR = Path(__file__).resolve().parent.parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
SERVER_PROPERTIES_TEMPLATE = KAFKA_DIR / "server.properties"
LOG4J2_PROPERTIES = KAFKA_DIR / "log4j2.properties"

READY_LINE = "Kafka Server started"
ADDRESS_IN_USE = "Address already in use"
CACHE_ENV = "BOOKING_ACCOUNTS_CACHE"

JVM_OPTS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    # C1 only: the broker starts ~30% faster and tests never run long enough for C2 to pay off.
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)
FORMAT_JVM_OPTS = ("-Xms64m", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData")


def kafka_version(pom: Path = POM) -> str:
    """``kafka.version`` from deploy/kafka/pom.xml (the single source of truth)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)  # noqa: S314 - our file
    if node is None or not (node.text or "").strip():
        raise InfraError(f"no <kafka.version> property in {pom}")
    return node.text.strip()


def default_cache_root() -> Path:
    """$BOOKING_ACCOUNTS_CACHE, else ~/.cache/booking-accounts."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "booking-accounts"


def new_cluster_id() -> str:
    """Kafka's own cluster-id form: base64url of 16 random bytes, no padding, 22 chars,
    never starting with '-' (would look like a CLI flag)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):
            return cid


def render_server_properties(broker_port: int, controller_port: int, data_dir: Path) -> str:
    template = string.Template(SERVER_PROPERTIES_TEMPLATE.read_text(encoding="utf-8"))
    return template.substitute(
        broker_port=broker_port, controller_port=controller_port, data_dir=str(data_dir)
    )


class LocalKafka(LocalServer):
    """One broker+controller JVM on 127.0.0.1, in its own process group.

    ``work_dir`` holds server.properties, the data (``data/``), the JVM output (``kafka.log``)
    and ``java.io.tmpdir``. When not given, a temporary directory is created and deleted again
    by :meth:`close`. With ``persistent=True`` an existing, already formatted work dir is reused
    (``start()`` does not re-format it; ports are then taken from its server.properties) - this
    is what ``python -m deploy.local up`` uses so events survive between runs.

    Never leaves an orphan JVM: the process group is registered with a watchdog process that
    kills it if this Python process dies (see ``_watchdog.py``).
    """

    work_dir_prefix = "booking-kafka-"

    def __init__(
        self,
        *,
        work_dir: Path | str | None = None,
        broker_port: int = 0,
        controller_port: int = 0,
        persistent: bool = False,
        cache_root: Path | str | None = None,
        version: str | None = None,
        java: str | None = None,
        mvn: str | None = None,
        sasl_users: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        super_user: str | None = None,
        sasl_port: int = 0,
    ) -> None:
        self.version = version or kafka_version()
        # With users: a second listener, SASL_PLAINTEXT (PLAIN and SCRAM-SHA-512), on
        # `sasl_port`, or SASL_SSL with `tls` (a PEM certificate and its unencrypted PKCS#8
        # key); the PLAINTEXT one stays for the broker itself and for plain clients.
        self.sasl_users = dict(sasl_users or {})
        self.tls = tls
        # With a super user (one of `sasl_users`): ACLs (StandardAuthorizer). Every listener
        # then authenticates: the broker's own and the controller's take SASL PLAIN (as the
        # super user), so no port is left where an anonymous client could skip the ACLs.
        if super_user is not None and super_user not in self.sasl_users:
            raise InfraError(f"the super user {super_user!r} must be one of sasl_users")
        self.super_user = super_user
        self.sasl_port: int | None = None
        self.cache_root = Path(cache_root) if cache_root else default_cache_root()
        self._work_dir_arg = Path(work_dir) if work_dir else None
        self._owns_work_dir = work_dir is None
        self._work_dir: Path | None = self._work_dir_arg
        self.persistent = persistent
        self._want_broker_port = broker_port
        self._want_sasl_port = sasl_port
        self._want_controller_port = controller_port
        self.broker_port: int | None = None
        self.controller_port: int | None = None
        self.cluster_id: str | None = None
        self._java = java
        self._mvn = mvn
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ paths

    @property
    def cache_dir(self) -> Path:
        return self.cache_root / f"kafka-{self.version}"

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / "libs"

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def log_file(self) -> Path:
        """stdout/stderr of the broker JVM (appended across restarts)."""
        return self.work_dir / "kafka.log"

    @property
    def properties_file(self) -> Path:
        return self.work_dir / "server.properties"

    @property
    def bootstrap_servers(self) -> str:
        if self.broker_port is None:
            raise InfraError("LocalKafka has not been started")
        return f"{LOOPBACK}:{self.broker_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ tools

    def _tool(self, name: str, explicit: str | None, hint: str) -> str:
        path = explicit or shutil.which(name)
        if not path:
            raise ToolMissingError(
                f"`{name}` not found on PATH; it is needed to run Kafka without Docker. {hint}"
            )
        return path

    @property
    def java(self) -> str:
        return self._tool(
            "java",
            self._java,
            "Install Java 17+ (Debian: apt-get install -y openjdk-17-jre-headless).",
        )

    @property
    def mvn(self) -> str:
        return self._tool(
            "mvn",
            self._mvn,
            "Install Maven (Debian: apt-get install -y maven); it downloads the broker jars "
            "from Maven Central once.",
        )

    def _pom_digest(self) -> str:
        return hashlib.sha256(POM.read_bytes()).hexdigest()

    def is_assembled(self) -> bool:
        stamp = self.libs_dir / ".assembled"
        try:
            return stamp.read_text().strip() == self._pom_digest()
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------------ assemble

    def assemble(self, *, timeout: float = 900) -> Path:
        """Resolve the broker jars into the cache once; return the libs dir.

        Idempotent. Safe when several processes race: an exclusive file lock serialises them
        and the jars are resolved into a temporary directory that is renamed into place only
        when complete (``libs/.assembled`` records the sha256 of the pom it came from).
        """
        t0 = time.monotonic()
        if self.is_assembled():
            self.timings["assemble_s"] = elapsed(t0)
            return self.libs_dir
        self.java  # noqa: B018 - fail early with a clear message if java is missing
        mvn = self.mvn
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.is_assembled():  # another process did it while we waited
                    self.timings["assemble_s"] = elapsed(t0)
                    log.info("kafka.assemble", cached=True, seconds=self.timings["assemble_s"])
                    return self.libs_dir
                build = Path(tempfile.mkdtemp(prefix="resolve-", dir=self.cache_dir))
                try:
                    shutil.copy2(POM, build / "pom.xml")
                    out = build / "libs"
                    run_checked(
                        [
                            mvn,
                            "-B",
                            "-q",
                            "-f",
                            str(build / "pom.xml"),
                            "dependency:copy-dependencies",
                            "-DincludeScope=runtime",
                            f"-DoutputDirectory={out}",
                        ],
                        what="Resolving the Kafka broker jars with Maven (needs Maven Central)",
                        cwd=build,
                        timeout=timeout,
                    )
                    jars = sorted(out.glob("*.jar"))
                    if not any(j.name.startswith("kafka_2.13-") for j in jars):
                        raise InfraError(f"mvn produced no kafka_2.13 jar in {out}")
                    (out / ".assembled").write_text(self._pom_digest() + "\n")
                    if self.libs_dir.exists():
                        shutil.rmtree(self.libs_dir)
                    out.rename(self.libs_dir)
                finally:
                    shutil.rmtree(build, ignore_errors=True)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        jars = list(self.libs_dir.glob("*.jar"))
        size_mb = round(sum(j.stat().st_size for j in jars) / 1e6, 1)
        self.timings["assemble_s"] = elapsed(t0)
        log.info(
            "kafka.assemble",
            cached=False,
            version=self.version,
            jars=len(jars),
            size_mb=size_mb,
            seconds=self.timings["assemble_s"],
            libs=str(self.libs_dir),
        )
        return self.libs_dir

    # ------------------------------------------------------------------ start/stop

    def _java_argv(self, main: str, *args: str, opts: tuple[str, ...] = JVM_OPTS) -> list[str]:
        tmp = self.work_dir / "tmp"  # zstd/snappy unpack native libs here; /tmp may be noexec
        tmp.mkdir(parents=True, exist_ok=True)
        return [
            self.java,
            *opts,
            f"-Djava.io.tmpdir={tmp}",
            f"-Dlog4j2.configurationFile={LOG4J2_PROPERTIES}",
            f"-Dkafka.logs.dir={self.work_dir / 'logs'}",
            "-cp",
            str(self.libs_dir / "*"),
            main,
            *args,
        ]

    def _is_formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists() and self.properties_file.exists()

    def _read_ports(self) -> tuple[int, int]:
        text = self.properties_file.read_text()
        broker = re.search(r"^listeners=PLAINTEXT://[^:]+:(\d+)", text, re.M)
        sasl = re.search(r"^listeners=.*SASL_[A-Z]+://[^:]+:(\d+)", text, re.M)
        self.sasl_port = int(sasl.group(1)) if sasl else None
        ctrl = re.search(r"^controller\.quorum\.bootstrap\.servers=[^:]+:(\d+)", text, re.M)
        if not broker or not ctrl:
            raise InfraError(f"cannot read the ports from {self.properties_file}")
        return int(broker.group(1)), int(ctrl.group(1))

    def _format(self) -> None:
        """Write server.properties and format a fresh data dir (new cluster id)."""
        assert self.broker_port
        assert self.controller_port
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.properties_file.write_text(
            render_server_properties(self.broker_port, self.controller_port, self.data_dir)
            + self._sasl_properties()
        )
        self.cluster_id = new_cluster_id()
        scram = [
            arg
            for name, password in self.sasl_users.items()
            for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]
        t0 = time.monotonic()
        run_checked(
            self._java_argv(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                self.cluster_id,
                "-c",
                str(self.properties_file),
                *scram,
                opts=FORMAT_JVM_OPTS,
            ),
            what="Formatting the Kafka data dir (kafka.tools.StorageTool format)",
            timeout=120,
        )
        self.timings["format_s"] = elapsed(t0)

    def _sasl_properties(self) -> str:
        """Settings appended to server.properties for the SASL listener (a later line wins)."""
        if not self.sasl_users:
            return ""
        b, c, port = self.broker_port, self.controller_port, self.sasl_port
        protocol = "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        name = protocol.lower()
        plain_users = " ".join(f'user_{n}="{p}"' for n, p in self.sasl_users.items())
        lines = [
            "",
            f"# {protocol} (LocalKafka(sasl_users=...)): PLAIN and SCRAM-SHA-512 on a second listener.",
            f"listeners=PLAINTEXT://127.0.0.1:{b},CONTROLLER://127.0.0.1:{c},{protocol}://127.0.0.1:{port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{b},CONTROLLER://127.0.0.1:{c},{protocol}://127.0.0.1:{port}",
            f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,{protocol}:{protocol}",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512",
            f"listener.name.{name}.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            f"listener.name.{name}.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]
        if self.super_user:
            lines += self._authorizer_properties(plain_users)
        if self.tls:
            keystore = self.work_dir / "broker-keystore.pem"  # PEM keystore: key, then certificate
            keystore.write_bytes(self.tls[1].read_bytes() + self.tls[0].read_bytes())
            keystore.chmod(0o600)
            lines += [
                f"listener.name.{name}.ssl.keystore.type=PEM",
                f"listener.name.{name}.ssl.keystore.location={keystore}",
            ]
        return "\n".join([*lines, ""])

    def _authorizer_properties(self, plain_users: str) -> list[str]:
        b, c, port = self.broker_port, self.controller_port, self.sasl_port
        protocol = "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        admin = self.super_user
        assert admin is not None
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{admin}" password="{self.sasl_users[admin]}" {plain_users};'
        )
        return [
            "",
            f"# ACLs (LocalKafka(super_user=...)): only User:{admin} may do anything without one.",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{admin}",
            "allow.everyone.if.no.acl.found=false",
            "# The broker's own listener and the controller's authenticate too (SASL PLAIN, as the",
            "# super user): the PLAINTEXT listener is gone.",
            f"listeners=BROKER://127.0.0.1:{b},CONTROLLER://127.0.0.1:{c},{protocol}://127.0.0.1:{port}",
            f"advertised.listeners=BROKER://127.0.0.1:{b},CONTROLLER://127.0.0.1:{c},{protocol}://127.0.0.1:{port}",
            "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,BROKER:SASL_PLAINTEXT,"
            f"{protocol}:{protocol}",
            "inter.broker.listener.name=BROKER",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.broker.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.broker.plain.sasl.jaas.config={jaas}",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.controller.plain.sasl.jaas.config={jaas}",
        ]

    @property
    def sasl_bootstrap_servers(self) -> str:
        assert self.sasl_port, "start() a LocalKafka with sasl_users first"
        return f"{LOOPBACK}:{self.sasl_port}"

    def _launch(self, timeout: float) -> None:
        """Start the JVM on the current ports/data dir and wait until it is ready."""
        self.work_dir.joinpath("logs").mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        argv = self._java_argv("kafka.Kafka", str(self.properties_file))
        t0 = time.monotonic()
        self._proc = spawn(argv, log_file=self.log_file, first_signal=signal.SIGTERM, grace=10)
        deadline = t0 + timeout
        assert self.broker_port
        while True:
            out = read_from(self.log_file, self._log_offset)
            if READY_LINE in out and can_connect(LOOPBACK, self.broker_port):
                break
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                if ADDRESS_IN_USE in out:
                    raise _AddressInUseError(out[-3000:])
                raise InfraError(
                    f"Kafka exited with code {code} during start-up; log {self.log_file}:\n{out[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"Kafka did not log {READY_LINE!r} within {timeout:.0f}s; "
                    f"log {self.log_file}:\n{out[-3000:]}"
                )
            time.sleep(0.05)
        self.timings["launch_s"] = elapsed(t0)

    def start(self, timeout: float = 60, *, attempts: int = 5) -> str:
        """Assemble if needed, pick free ports, format a fresh data dir, start, wait.

        Returns the bootstrap string ``127.0.0.1:PORT``. Retries with new ports when a port
        was taken between choosing and binding it.
        """
        if self.is_running:
            return self.bootstrap_servers
        t_total = time.monotonic()
        self.assemble()
        self.work_dir.mkdir(parents=True, exist_ok=True)

        if self.persistent and self._is_formatted():
            self.broker_port, self.controller_port = self._read_ports()
            self._check_ports_free()
            self._launch(timeout)
            self.timings["start_s"] = self.timings["launch_s"]
            self._log_started(t_total, formatted=False)
            return self.bootstrap_servers

        fixed = bool(self._want_broker_port or self._want_controller_port or self._want_sasl_port)
        for attempt in range(1, attempts + 1):
            wanted = (self._want_broker_port, self._want_controller_port, self._want_sasl_port)
            picked = [p for p in free_ports(3) if p not in wanted]
            self.broker_port = self._want_broker_port or picked.pop(0)
            self.controller_port = self._want_controller_port or picked.pop(0)
            self.sasl_port = (self._want_sasl_port or picked.pop(0)) if self.sasl_users else None
            if fixed:
                self._check_ports_free()
            self._format()
            try:
                self._launch(timeout)
            except _AddressInUseError as exc:
                if fixed or attempt == attempts:
                    raise InfraError(
                        f"Kafka could not bind 127.0.0.1:{self.broker_port}/"
                        f"{self.controller_port}: {ADDRESS_IN_USE}\n{exc}"
                    ) from None
                log.info("kafka.port_race_retry", attempt=attempt)
                continue
            self.timings["start_s"] = self.timings["launch_s"]
            self._log_started(t_total, formatted=True)
            return self.bootstrap_servers
        raise AssertionError("unreachable")

    def _check_ports_free(self) -> None:
        for port in (self.broker_port, self.controller_port, self.sasl_port):
            if port and not port_is_free(port):
                raise InfraError(f"port 127.0.0.1:{port} is already in use (another broker still running?)")

    def _log_started(self, t_total: float, *, formatted: bool) -> None:
        self.timings["total_s"] = elapsed(t_total)
        log.info(
            "kafka.started",
            bootstrap=self.bootstrap_servers,
            version=self.version,
            pid=self.pid,
            formatted=formatted,
            assemble_s=self.timings.get("assemble_s"),
            format_s=self.timings.get("format_s") if formatted else None,
            start_s=self.timings.get("start_s"),
            total_s=self.timings["total_s"],
            work_dir=str(self.work_dir),
        )

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL after ``timeout`` seconds."""
        if self._proc is None:
            return
        t0 = time.monotonic()
        code = terminate_group(self._proc, sig=signal.SIGTERM, timeout=timeout)
        self._proc = None
        self.timings["stop_s"] = elapsed(t0)
        log.info("kafka.stopped", exit_code=code, seconds=self.timings["stop_s"])

    def kill(self) -> None:
        """SIGKILL the broker immediately (simulates a crash / kill -9)."""
        if self._proc is None:
            return
        code = terminate_group(self._proc, sig=signal.SIGKILL)
        self._proc = None
        log.info("kafka.killed", exit_code=code)

    def restart(self, timeout: float = 60) -> str:
        """Start again on the SAME ports and the SAME data dir (no re-format).

        After :meth:`kill` this exercises Kafka's crash recovery. Returns the (unchanged)
        bootstrap string.
        """
        if self.broker_port is None or not self._is_formatted():
            raise InfraError("restart() needs a previous start()")
        self.stop()
        t0 = time.monotonic()
        # The old listening sockets are closed once the JVM is gone, but be tolerant of a
        # slow kernel: wait briefly for the ports before launching.
        deadline = time.monotonic() + 10
        while not (port_is_free(self.broker_port) and port_is_free(self.controller_port or 0)):
            if time.monotonic() > deadline:
                self._check_ports_free()
            time.sleep(0.1)
        self._launch(timeout)
        self.timings["restart_s"] = elapsed(t0)
        log.info("kafka.restarted", bootstrap=self.bootstrap_servers, seconds=elapsed(t0))
        return self.bootstrap_servers

    def _describe(self) -> str:
        return f"{self.version} broker_port={self.broker_port}"


class _AddressInUseError(InfraError):
    pass
