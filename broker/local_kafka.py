"""Fetch, start, stop and inspect a real local Apache Kafka broker (KRaft, no Docker).

    python -m broker.local_kafka fetch|start|stop|status|reset [--brokers N] [--node ID]

The first client port comes from KAFKA_BOOTSTRAP_SERVERS (default localhost:9092); with
`--brokers 3` (or BROKERS=3) the nodes take that port and the next two, and form one KRaft
quorum. A single node keeps its data, log and pid under `.kafka/<port>/`, a node of a
three-node cluster under `.kafka/cluster-<first port>/<port>/`; KAFKA_LOCAL_DIR moves
`.kafka`. `--node ID` starts, stops or shows one node of the cluster alone.
Exit status: 0 done, 1 failed, 2 usage or missing prerequisite, 3 (status) not running.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from broker.node_config import PROJECT_ROOT, Node, SaslUser, cluster_nodes, jvm_options, kafka_uuid, libs_dir

POM = PROJECT_ROOT / "broker" / "pom.xml"
LOG4J_CONFIG = PROJECT_ROOT / "broker" / "log4j2.xml"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
INSTALL_HINT = ("Install Java 17+ and Maven (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless maven), "
                "or use any running broker instead by setting KAFKA_BOOTSTRAP_SERVERS=host:port.")


class BrokerToolError(RuntimeError):
    """A failure the user can act on: the message names what failed and what to do."""

    exit_status = 1


class MissingPrerequisite(BrokerToolError):
    exit_status = 2


def say(message: str) -> None:
    print(f"[local-kafka] {message}", flush=True)


# ---------------------------------------------------------------------------- prerequisites

def java_major_version(java: str) -> int:
    """Return the major version that `java -version` prints, such as 17."""
    output = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    for token in output.replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and ("." in token or token.isdigit()):
            major = int(head)
            return int(token.split(".")[1]) if major == 1 else major
    raise MissingPrerequisite(f"could not read the Java version from: {output.strip()!r}. {INSTALL_HINT}")


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise MissingPrerequisite(f"Java not found. {INSTALL_HINT}")
    if java_major_version(java) < 17:
        raise MissingPrerequisite(f"Java 17 or newer is required, {java} is older. {INSTALL_HINT}")
    return java


def classpath() -> str:
    jars = sorted(libs_dir().glob("*.jar"))
    if not any(jar.name.startswith("kafka_2.13-") for jar in jars):
        raise BrokerToolError(f"no Kafka jars in {libs_dir()}; run `make kafka-fetch` first")
    return os.pathsep.join(str(jar) for jar in jars)


# ---------------------------------------------------------------------------- fetch

def fetch(force: bool = False) -> None:
    """Copy kafka_2.13 and its runtime dependencies from Maven Central into `.kafka/libs`."""
    marker = libs_dir() / ".fetched-from-pom"
    pom_text = POM.read_text()
    if not force and marker.is_file() and marker.read_text() == pom_text:
        return
    find_java()
    mvn = shutil.which("mvn")
    if not mvn:
        raise MissingPrerequisite(f"Maven (mvn) not found. {INSTALL_HINT}")

    started = time.monotonic()
    say(f"fetching Kafka jars with Maven into {libs_dir()} (about 30 s the first time)")
    if libs_dir().exists():
        shutil.rmtree(libs_dir())
    command = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
               f"-DoutputDirectory={libs_dir()}", "-DincludeScope=runtime"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BrokerToolError(f"Maven could not fetch the Kafka jars (exit {result.returncode}):\n{tail}")
    if not any(libs_dir().glob("log4j-slf4j-impl-*.jar")):
        raise BrokerToolError("the slf4j binding log4j-slf4j-impl is missing from the fetched jars; check broker/pom.xml")
    marker.write_text(pom_text)
    say(f"fetched {len(list(libs_dir().glob('*.jar')))} jars in {time.monotonic() - started:.1f} s")


# ---------------------------------------------------------------------------- probing

def port_accepts(port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def answers_metadata(address: str, timeout_s: float = 3.0, sasl: SaslUser | None = None) -> bool:
    """Return True when a Kafka broker at `address` responds to a metadata request (logging in with `sasl`)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError):
        return False  # Nothing listens there: no need to wait for the client's bootstrap timeout.

    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    login = {}
    if sasl:
        login = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                 "sasl_plain_username": sasl.username, "sasl_plain_password": sasl.password}
    try:
        admin = KafkaAdminClient(bootstrap_servers=address, client_id="local-kafka-probe",
                                 bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms, **login)
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def read_pid(node: Node) -> int | None:
    """Return the pid in the node's pid file when that process is still this node's Kafka broker.

    A zombie has an empty command line, so a killed node that is not yet reaped counts as stopped.
    """
    try:
        pid = int(node.pid_file.read_text().strip())
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    # The properties file path distinguishes this node from other brokers that may have reused the pid.
    is_this_node = b"kafka.Kafka" in command_line and str(node.properties_file).encode() in command_line
    return pid if is_this_node else None


def active_controller_id(nodes: list[Node]) -> int | None:
    """Return the node id of the KRaft quorum leader (the active controller), or None when unknown.

    Each running node records the leader it follows in `quorum-state`. The newest leader
    epoch among the running nodes wins, because a node's file can lag behind an election.
    """
    newest: tuple[int, int] | None = None
    for node in nodes:
        if read_pid(node) is None:
            continue
        try:
            state = json.loads(node.quorum_state_file.read_text())
            epoch, leader = int(state["leaderEpoch"]), int(state["leaderId"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if newest is None or epoch > newest[0]:
            newest = (epoch, leader)
    if newest is None or newest[1] < 0:
        return None  # No node is running, or an election is in progress.
    return newest[1]


def log_tail(node: Node, lines: int = 25) -> str:
    try:
        text = node.log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "(no broker log yet)"
    return "\n".join(text[-lines:])


# ---------------------------------------------------------------------------- start

def format_storage(java: str, nodes: list[Node], node: Node) -> None:
    """Format the node's KRaft log folder once; a formatted folder is left alone."""
    if (node.data_dir / "meta.properties").is_file():
        return
    cluster_id_file = node.cluster_folder / f"cluster-{nodes[0].port}.id"
    if not cluster_id_file.is_file():
        cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
        cluster_id_file.write_text(kafka_uuid())
    command = [java, "-cp", classpath(), f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "kafka.tools.StorageTool",
               "format", "-t", cluster_id_file.read_text().strip(), "-c", str(node.properties_file)]
    if node.sasl:
        for credential in node.sasl.scram_credentials():
            command += ["--add-scram", credential]
    if len(nodes) == 1:
        command.append("--standalone")
    else:
        command += ["--initial-controllers", initial_controllers(nodes)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        if node.sasl:
            output = output.replace(node.sasl.password, "*****")
        raise BrokerToolError(f"formatting {node.data_dir} failed:\n{output}")


def initial_controllers(nodes: list[Node]) -> str:
    """Return `id@host:port:directory-id` for every node, with directory ids kept across formats."""
    entries = []
    for node in nodes:
        id_file = node.folder / "directory.id"
        if not id_file.is_file():
            node.folder.mkdir(parents=True, exist_ok=True)
            id_file.write_text(kafka_uuid())
        entries.append(f"{node.node_id}@127.0.0.1:{node.controller_port}:{id_file.read_text().strip()}")
    return ",".join(entries)


def launch(java: str, nodes: list[Node], node: Node) -> subprocess.Popen:
    """Start the node's JVM in a session of its own, so it outlives this process."""
    node.folder.mkdir(parents=True, exist_ok=True)
    node.properties_file.write_text(node.render_properties())
    format_storage(java, nodes, node)
    tmp_dir = node.folder / "tmp"  # zstd-jni and snappy unpack native libraries here.
    tmp_dir.mkdir(exist_ok=True)
    command = [java, *jvm_options(len(nodes)), f"-Djava.io.tmpdir={tmp_dir}",
               f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", classpath(),
               "kafka.Kafka", str(node.properties_file)]
    with open(node.log_file, "ab") as log:
        log.write(f"\n==== start {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=node.folder, start_new_session=True)
    node.pid_file.write_text(f"{process.pid}\n")
    return process


def wait_for_node(node: Node, pid: int, process: subprocess.Popen | None, ready: Callable[[], bool],
                  waiting_for: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll until `ready()` is true, and raise `BrokerToolError` when the JVM exits or `timeout_s` passes first.

    `process` is the JVM this call launched, or None for a JVM that an earlier command launched.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            node.pid_file.unlink(missing_ok=True)
            raise BrokerToolError(f"the broker on port {node.port} exited with status {process.returncode} "
                                  f"during start. Last lines of {node.log_file}:\n{log_tail(node)}")
        if process is None and read_pid(node) != pid:
            raise BrokerToolError(f"the broker on port {node.port} (pid {pid}) exited during start. "
                                  f"Last lines of {node.log_file}:\n{log_tail(node)}")
        if ready():
            return
        time.sleep(0.5)
    raise BrokerToolError(f"the broker on port {node.port} did not {waiting_for} within {timeout_s:.0f} s. "
                          f"Last lines of {node.log_file}:\n{log_tail(node)}")


def node_answers(node: Node, timeout_s: float = 2.0) -> bool:
    return port_accepts(node.port, min(timeout_s, 0.5)) and answers_metadata(node.address, timeout_s, node.sasl)


def start(nodes: list[Node], only: int | None = None) -> None:
    """Start every node of `nodes` (or only node `only`) that does not respond to metadata requests yet.

    A node that an earlier command launched and that does not respond yet is waited for,
    not launched again. A KRaft node serves clients only once a majority of the quorum
    runs, so with fewer nodes running this returns once the started nodes listen on their
    controller ports, and prints which node to start next.
    """
    chosen = [node for node in nodes if only is None or node.node_id == only]
    running_ids = {node.node_id for node in nodes if read_pid(node) is not None}
    to_launch: list[Node] = []
    starting: list[tuple[Node, int, subprocess.Popen | None]] = []
    for node in chosen:
        pid = read_pid(node)
        client_port_open = port_accepts(node.port)
        if client_port_open and answers_metadata(node.address, 3.0, node.sasl):
            say(f"a Kafka broker already answers at {node.address}; nothing to start")
        elif pid is not None:
            say(f"broker node {node.node_id} (pid {pid}) is already starting; waiting for it")
            starting.append((node, pid, None))
        elif client_port_open or port_accepts(node.controller_port):
            raise BrokerToolError(
                f"port {node.port} or {node.controller_port} on 127.0.0.1 is taken by a process that is not a "
                f"Kafka broker. Stop that process, or set KAFKA_BOOTSTRAP_SERVERS to another port such as "
                f"localhost:{node.port + 1000}.")
        else:
            to_launch.append(node)
    if not to_launch and not starting:
        return

    started = time.monotonic()
    if to_launch:
        fetch()
        java = find_java()
        for node in to_launch:
            process = launch(java, nodes, node)
            starting.append((node, process.pid, process))
            running_ids.add(node.node_id)  # Its /proc command line can still be empty right after the launch.

    majority = len(nodes) // 2 + 1
    if len(running_ids) < majority:
        for node, pid, process in starting:
            wait_for_node(node, pid, process, lambda: port_accepts(node.controller_port, 0.5),
                          "listen on its controller port")
        started_ids = ", ".join(str(node.node_id) for node, _, _ in starting)
        next_id = next(node.node_id for node in nodes if node.node_id not in running_ids)
        say(f"started broker node {started_ids}; the cluster serves clients once {majority} of its {len(nodes)} "
            f"nodes run, so start another one with `--node {next_id}`, or all of them with `start`")
        return

    for node, pid, process in starting:
        wait_for_node(node, pid, process, lambda: node_answers(node), "answer")
        say(f"broker node {node.node_id} ready at {node.address} pid={pid} log={node.log_file} "
            f"({time.monotonic() - started:.1f} s)")


# ---------------------------------------------------------------------------- stop, status, reset

def stop_nodes(nodes: list[Node], timeout_s: float = STOP_TIMEOUT_S) -> list[Node]:
    """Stop nodes cleanly with SIGTERM, all at once, then SIGKILL any left after `timeout_s`.

    Signalling every node together lets the last ones finish their controlled shutdown
    while the KRaft quorum still has a majority. Returns the nodes that were running.
    """
    running = []
    for node in nodes:
        pid = read_pid(node)
        if pid is None:
            node.pid_file.unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        running.append((node, pid))

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_is_alive(pid) for _, pid in running):
        time.sleep(0.2)
    for node, pid in running:
        if _is_alive(pid):
            say(f"node {node.node_id} (pid {pid}) did not stop within {timeout_s:.0f} s; killing it")
            os.kill(pid, signal.SIGKILL)
        node.pid_file.unlink(missing_ok=True)
        say(f"stopped broker node {node.node_id} on port {node.port} (pid {pid})")
    return [node for node, _ in running]


def _is_alive(pid: int) -> bool:
    """Return whether `pid` still runs; a zombie, dead but not yet reaped, counts as stopped."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def stop(nodes: list[Node], only: int | None = None) -> None:
    chosen = [node for node in nodes if only is None or node.node_id == only]
    if not stop_nodes(chosen):
        say("no local broker started by this project is running at " + ", ".join(n.address for n in chosen))


def status(nodes: list[Node], only: int | None = None) -> bool:
    """Print one line per node (or for node `only`) and return True when every node shown responds.

    A node responds when it returns metadata. `controller=active` marks the KRaft
    quorum leader, and the other responding nodes are standby controllers.
    """
    all_up = True
    leader_id = active_controller_id(nodes)
    for node in nodes:
        if only is not None and node.node_id != only:
            continue
        pid = read_pid(node)
        answering = node_answers(node)
        all_up = all_up and answering
        state = "stopped"
        if answering:
            state = "running"
        elif pid:
            state = "starting or stuck"
        controller = "-"
        if answering and leader_id is not None:
            controller = "active" if node.node_id == leader_id else "standby"
        say(f"node {node.node_id}: {state} address={node.address} controller_port={node.controller_port} "
            f"pid={pid or '-'} role=broker+controller controller={controller} log={node.log_file}")
    return all_up


def reset(nodes: list[Node]) -> None:
    """Stop the nodes and wipe their data folders; the next start formats fresh storage."""
    stop(nodes)
    for node in nodes:
        if node.folder.exists():
            shutil.rmtree(node.folder)
            say(f"wiped {node.folder}")
    (nodes[0].cluster_folder / f"cluster-{nodes[0].port}.id").unlink(missing_ok=True)


# ---------------------------------------------------------------------------- CLI

def first_local_port(bootstrap_servers: str) -> int:
    """Return the port of the first bootstrap address, which must be on this machine."""
    first = bootstrap_servers.split(",")[0].strip()
    host, _, port_text = first.rpartition(":")
    if host not in LOOPBACK_NAMES:
        raise MissingPrerequisite(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers} is not on this machine; the local "
                                  f"broker runs on 127.0.0.1 only. Use localhost:PORT, or manage that broker yourself.")
    if not port_text.isdigit():
        raise MissingPrerequisite(f"invalid KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers}: expected host:port")
    return int(port_text)


def nodes_from_settings(brokers: int) -> list[Node]:
    """Lay out the local nodes from the settings the producer and consumer read (environment, then .env).

    With KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT the local broker requires SASL and accepts
    the one account named by KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD, with PLAIN and SCRAM.
    """
    from utils.utils_config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as error:
        raise MissingPrerequisite(str(error)) from None
    if settings.security_protocol not in ("PLAINTEXT", "SASL_PLAINTEXT"):
        raise MissingPrerequisite(f"KAFKA_SECURITY_PROTOCOL={settings.security_protocol}: the local broker offers "
                                  f"PLAINTEXT and SASL_PLAINTEXT only; use those, or point the clients at your cluster")
    sasl = None
    if settings.security_protocol == "SASL_PLAINTEXT":
        sasl = SaslUser(settings.sasl_username, settings.sasl_password)
    return cluster_nodes(first_local_port(settings.bootstrap_servers), brokers, sasl)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m broker.local_kafka", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("fetch", "start", "stop", "status", "reset"))
    parser.add_argument("--brokers", type=int, default=int(os.environ.get("BROKERS") or 1), choices=(1, 3),
                        help="nodes in the local cluster (default: BROKERS or 1)")
    parser.add_argument("--node", type=int, default=None,
                        help="start, stop or show only this node id, from 1 to --brokers")
    args = parser.parse_args(argv)
    if args.node is not None:
        if args.command not in ("start", "stop", "status"):
            parser.error(f"--node applies to start, stop and status, not to {args.command}")
        if not 1 <= args.node <= args.brokers:
            parser.error(f"--node {args.node}: expected a node id from 1 to {args.brokers} (--brokers {args.brokers})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "fetch":
            fetch(force=True)
            return 0
        nodes = nodes_from_settings(args.brokers)
        if args.command == "start":
            start(nodes, args.node)
        elif args.command == "stop":
            stop(nodes, args.node)
        elif args.command == "status":
            return 0 if status(nodes, args.node) else 3
        elif args.command == "reset":
            reset(nodes)
        return 0
    except BrokerToolError as error:
        say(f"error: {error}")
        return error.exit_status


if __name__ == "__main__":
    sys.exit(main())
