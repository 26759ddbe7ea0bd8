"""docs/deployment.md's "Set up a host" runs as written, in order, on a fresh host.

The ```sh and ```ini blocks between the ``setup:begin`` and ``setup:end`` comments are
taken from the doc in order. Each ini block is written to the file its first comment line
names; each sh block is split into commands (continuation lines and heredocs kept whole),
and each command runs in bash with the environment and working directory the commands
before it left. The test changes the doc in these ways only, each listed here:

- ``SUBSTITUTIONS``: paths and ports of the host become the test's (the checkout, tmp
  folders, free ports); ``ENV_VALUES``: the env file's database and broker addresses
  become the test's databases and private Redis.
- ``SKIPPED``: commands that need root or the network (asserted to be in the doc, so a new
  command always runs).
- ``systemctl``: ``daemon-reload`` reads the unit files; ``enable --now`` starts each
  unit's ``ExecStart`` as systemd would (its ``EnvironmentFile``, ``WorkingDirectory``,
  ``%`` specifiers, ``Restart=always`` with ``RestartSec``), then waits until each unit
  logged that it works (``READY``), so a step placed after the units that they need fails;
  the units stop at the end.
- ``WAIT_UNTIL``: commands the doc says to repeat until they pass, run again until then.
- The imagen database stands in for the Supabase project: it gets Supabase's roles and
  ``auth.uid()`` (what ``imagen db migrate --bootstrap`` creates first) before the guide
  runs, as a Supabase project has them.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import yaml

from imagen_pipeline.db.migrate import bootstrap_sql
from imagen_pipeline_tests.fixtures.celery import RedisServer, free_port
from imagen_pipeline_tests.fixtures.imagen import REPO_ROOT, VENV_BIN
from imagen_pipeline_tests.fixtures.postgres import throwaway_database

DOC = REPO_ROOT / "docs" / "deployment.md"
SECTION = re.compile(r"<!-- setup:begin.*?-->(.*?)<!-- setup:end -->", re.DOTALL)
BLOCK = re.compile(r"^```(sh|ini)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")

SKIPPED = (
    # Network: the checkout under test stands in for the clone, its .venv for bootstrap's.
    "git clone https://github.com/OWNER/imagen_pipeline.git /opt/imagen_pipeline",
    "bash scripts/bootstrap.sh",
    # Root: the test's private redis-server stands in for Debian's.
    "apt install -y redis-server",
    "sed -i 's/^appendonly no/appendonly yes/' /etc/redis/redis.conf",
    "systemctl restart redis-server",
    # Root: the test's processes run as the test's user.
    "useradd --system --home-dir /var/lib/imagen --shell /usr/sbin/nologin imagen",
    "chown -R imagen: /etc/imagen /var/lib/imagen",
)
"""Commands of the guide the test does not run, exactly as the doc writes them."""

WAIT_UNTIL_S = 90.0
WAIT_UNTIL = {
    # "run it again until every line is ok or warn": the services take a while to load.
    "imagen doctor": "",
    # "a few seconds later, read it back: done".
    'psql "$IMAGEN_DATABASE_URL" -c "SELECT j.id, j.status, i.metadata->>\'local_path\' '
    "AS file FROM imagen.jobs j LEFT JOIN imagen.images i ON i.id = j.image_id ORDER BY "
    'j.id DESC LIMIT 1"': "done",
}
"""Commands run again (for up to WAIT_UNTIL_S) until they exit 0 and print the text."""
RESTARTED = {"imagen-listener"}
"""Units systemd may start more than once (the guide says why); the others must not exit."""

EXPECTED_ERRORS = (
    # The webserver and the daemon start before the code server listens, and try again.
    "DagsterUserCodeUnreachableError",
    # The listener exits while its webserver does not answer; systemd starts it again.
    "did not answer (connection refused); start dagster-webserver",
)
"""The only errors the units may log: those of units started at once, none of a step."""
LOG_RECORD = re.compile(r"^(?=(?:\x1b\[\d+m|\[)?\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)", re.MULTILINE)
ERROR_MARK = re.compile(r"Traceback|\bERROR\b|\berror:")

READY = {
    "imagen-code-server": "Started Dagster code server",
    "imagen-webserver": "Serving dagster-webserver",
    "imagen-daemon": "imagen_jobs_sensor",
    "imagen-worker": " ready.",
    "imagen-listener": "listening on channel imagen_jobs",
}
"""What each unit logs once it works (the daemon: its first jobs sensor tick). After
``systemctl enable --now`` the next command waits until all of them did: the units must
not need anything a later step of the guide makes."""
READY_TIMEOUT_S = 90.0

UNIT_BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
"""What systemd gives a unit before its EnvironmentFile (plus HOME, and PYTHONPATH so the
checkout under test is the one imported)."""


@dataclass
class Unit:
    """One systemd service from the guide, started as systemd would start it."""

    name: str
    exec_start: list[str]
    env: dict[str, str]
    cwd: Path
    restart_s: float | None
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def spawn(self) -> None:
        """Start ExecStart once, in a process group of its own."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.exec_start,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def supervise(self) -> None:
        """Start the unit, and again after it exits while ``Restart=always``."""
        while not self.stopped.is_set():
            self.spawn()
            assert self.process is not None
            self.process.wait()
            if self.restart_s is None or self.stopped.wait(self.restart_s):
                return

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after 10 s; no restart after."""
        self.stopped.set()
        self._terminate()
        if self.thread is not None:
            self.thread.join(timeout=(self.restart_s or 0) + 15)
        self._terminate()

    def _terminate(self) -> None:
        process = self.process
        if process is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def log(self) -> str:
        """What the unit's processes printed (its journal)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Host:
    """The test's stand-in for the host the guide sets up."""

    root: Path
    substitutions: dict[str, str]
    env_values: dict[str, str]
    env: dict[str, str]
    cwd: Path
    units: dict[str, Unit] = field(default_factory=dict)
    transcript: list[str] = field(default_factory=list)

    @property
    def unit_dir(self) -> Path:
        """Where the guide's unit files land (its /etc/systemd/system)."""
        return Path(self.substitutions["/etc/systemd/system"])

    def substitute(self, text: str) -> str:
        """The host's paths and ports replaced by the test's."""
        for old, new in self.substitutions.items():
            text = text.replace(old, new)
        for key, value in self.env_values.items():
            text = re.sub(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        return text

    def run(self, command: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run one command in bash; keep the environment and folder it leaves."""
        state = self.root / "shell-state"
        script = f'set -eo pipefail\n{command}\nenv -0 > "{state}.env"; pwd > "{state}.cwd"\n'
        completed = subprocess.run(
            ["bash", "-c", script],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if completed.returncode == 0:
            pairs = Path(f"{state}.env").read_text().split("\0")
            self.env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
            self.cwd = Path(Path(f"{state}.cwd").read_text().strip())
        return completed

    def systemctl(self, args: list[str]) -> None:
        """``daemon-reload`` and ``enable --now UNIT...``, as systemd would do them."""
        if args == ["daemon-reload"]:
            return
        assert args[:2] == ["enable", "--now"], f"systemctl {args} is not emulated"
        for name in args[2:]:
            unit = self.load_unit(name)
            unit.thread = threading.Thread(target=unit.supervise, daemon=True)
            unit.thread.start()
            self.units[name] = unit
        self.wait_until_ready(args[2:])

    def wait_until_ready(self, names: list[str]) -> None:
        """Wait until each unit logged its READY line; fail with the journal if not."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = list(names)
        while waiting:
            unknown = [name for name in waiting if name not in READY]
            assert not unknown, f"units without a READY line in the test: {unknown}"
            waiting = [name for name in waiting if READY[name] not in self.units[name].log()]
            if waiting and time.monotonic() > deadline:
                pytest.fail(
                    f"units not ready after {READY_TIMEOUT_S}s: {waiting}\n{self.journal()}"
                )
            time.sleep(0.2)

    def load_unit(self, name: str) -> Unit:
        """Read ``name``.service from the guide's unit folder."""
        path = self.unit_dir / f"{name}.service"
        assert path.is_file(), f"systemctl enable {name}: no unit file {path} in the guide"
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(path.read_text())
        service = parser["Service"]
        env = dict(UNIT_BASE_ENV, HOME=self.env["HOME"])
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        env.update(environment_file(Path(service["EnvironmentFile"])))
        exec_start = [specifiers(word) for word in shlex.split(service["ExecStart"])]
        assert Path(exec_start[0]).is_absolute(), f"{name}: ExecStart needs an absolute path"
        restart = service.get("Restart", "no")
        assert restart in ("always", "no"), f"{name}: Restart={restart} is not emulated"
        restart_s = float(service.get("RestartSec", "0.1")) if restart == "always" else None
        return Unit(
            name=name,
            exec_start=exec_start,
            env=env,
            cwd=Path(service["WorkingDirectory"]),
            restart_s=restart_s,
            log_path=self.root / f"{name}.log",
        )

    def stop_units(self) -> None:
        """Stop every started unit (``systemctl stop``), all at once."""
        stopping = [threading.Thread(target=unit.stop) for unit in self.units.values()]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()

    def unexpected_errors(self) -> list[str]:
        """Log records of the units that report an error not in EXPECTED_ERRORS."""
        return [
            f"{unit.name}: {record.strip()[:3000]}"
            for unit in self.units.values()
            for record in LOG_RECORD.split(unit.log())
            if ERROR_MARK.search(record) and not any(e in record for e in EXPECTED_ERRORS)
        ]

    def journal(self) -> str:
        """The last lines of every unit's log, for a failure message."""
        return "\n".join(f"--- {u.name} ---\n{u.log()[-3000:]}" for u in self.units.values())


def environment_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's ``EnvironmentFile=`` reads them."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def specifiers(word: str) -> str:
    """Expand the systemd specifiers the guide uses (``%H``, ``%%``); refuse others."""
    expanded = re.sub(r"%%", "\0", word).replace("%H", socket.gethostname())
    assert "%" not in expanded, f"unit specifier in {word!r} is not emulated"
    return expanded.replace("\0", "%")


def commands(block: str) -> Iterator[str]:
    """The commands of a sh block: continuation lines joined, a heredoc kept with its
    command, blank and comment lines left out."""
    lines = iter(block.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = line
        while command.endswith("\\"):
            command += "\n" + next(lines)
        heredoc = HEREDOC.search(command)
        if heredoc:
            for body in lines:
                command += "\n" + body
                if body.strip() == heredoc.group(1):
                    break
        yield command


def setup_blocks() -> list[tuple[str, str]]:
    """The ("sh" | "ini", text) blocks of the guide's set-up section, in order."""
    found = SECTION.search(DOC.read_text(encoding="utf-8"))
    assert found, "docs/deployment.md has no setup:begin ... setup:end section"
    return BLOCK.findall(found.group(1))


@pytest.fixture
def host(tmp_path: Path, postgres_server_url: str, redis_server: RedisServer) -> Iterator[Host]:
    """Fresh databases, Redis, DAGSTER_HOME and /etc, /var/lib folders; units stopped after."""
    if shutil.which("psql") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("psql (the guide's first job uses it) is required in CI")
        pytest.skip("psql not installed")
    web_port, code_port = free_port(), free_port()
    workspace = yaml.safe_load((REPO_ROOT / "scripts" / "workspace.code_server.yaml").read_text())
    workspace["load_from"][0]["grpc_server"]["port"] = code_port
    workspace_file = tmp_path / "workspace.code_server.yaml"
    workspace_file.write_text(yaml.safe_dump(workspace))
    substitutions = {
        "/opt/imagen_pipeline/.venv/bin": str(VENV_BIN),
        "/opt/imagen_pipeline": str(REPO_ROOT),
        "/etc/systemd/system": str(tmp_path / "etc" / "systemd" / "system"),
        "/etc/imagen": str(tmp_path / "etc" / "imagen"),
        "/var/lib/imagen": str(tmp_path / "var" / "lib" / "imagen"),
        "scripts/workspace.code_server.yaml": str(workspace_file),
        "127.0.0.1:3000": f"127.0.0.1:{web_port}",
        "-p 3000": f"-p {web_port}",
        "-p 4266": f"-p {code_port}",
    }
    (tmp_path / "etc" / "systemd" / "system").mkdir(parents=True)
    with (
        throwaway_database(postgres_server_url) as dagster_url,
        throwaway_database(postgres_server_url) as imagen_url,
    ):
        with psycopg.connect(imagen_url, autocommit=True) as conn:
            conn.execute(bootstrap_sql())  # type: ignore[arg-type]
        host = Host(
            root=tmp_path,
            substitutions=substitutions,
            env_values={
                "DAGSTER_PG_URL": dagster_url,
                "IMAGEN_DATABASE_URL": imagen_url,
                "IMAGEN_CELERY_BROKER_URL": redis_server.url,
            },
            env=dict(os.environ),
            cwd=tmp_path,
        )
        try:
            yield host
        finally:
            host.stop_units()


def test_the_deployment_guide_sets_up_a_working_host(host: Host) -> None:
    blocks = setup_blocks()
    section = "\n".join(text for _, text in blocks)
    for old in host.substitutions:
        assert old in section, f"substitution {old!r} matches nothing in the guide"
    for key in host.env_values:
        assert re.search(rf"^{key}=", section, re.MULTILINE), f"the env file sets no {key}"
    skipped, waited = [], []
    for kind, text in blocks:
        if kind == "ini":
            first, _, _ = text.partition("\n")
            assert first.startswith("# /etc/systemd/system/"), f"ini block without path: {first}"
            path = Path(host.substitute(first.removeprefix("# ").split()[0]))
            path.write_text(host.substitute(text))
            continue
        for command in commands(text):
            if command in SKIPPED:
                skipped.append(command)
                continue
            concrete = host.substitute(command)
            words = concrete.split()
            if words[0] == "systemctl":
                host.systemctl(words[1:])
                continue
            expected = WAIT_UNTIL.get(command)
            deadline = time.monotonic() + WAIT_UNTIL_S
            while True:
                completed = host.run(concrete)
                output = completed.stdout + completed.stderr
                passed = completed.returncode == 0 and (expected or "") in output
                if passed or expected is None or time.monotonic() > deadline:
                    break
                time.sleep(1)
            if expected is not None:
                waited.append(command)
            assert passed, (
                f"guide command failed (exit {completed.returncode}):\n{command}\n"
                f"{output[-4000:]}\n{host.journal()}"
            )
            host.transcript.append(f"$ {command}\n{output}")
    assert sorted(skipped) == sorted(SKIPPED), "a skipped command is no longer in the guide"
    assert sorted(waited) == sorted(WAIT_UNTIL), "a waited-for command is no longer in the guide"

    # Every unit of the guide was started, and each still runs.
    defined = {path.stem for path in host.unit_dir.glob("*.service")}
    assert set(host.units) == defined
    for unit in host.units.values():
        assert unit.process is not None and unit.process.poll() is None, host.journal()
        assert unit.starts == 1 or unit.name in RESTARTED, f"{unit.name} exited\n{host.journal()}"

    # The services logged no error a step of the guide could have prevented (a step out of
    # order, a unit that cannot start).
    assert host.unexpected_errors() == []

    # The first job: done, with its image on disk where imagen.yaml puts it.
    images_dir = Path(host.substitute("/var/lib/imagen/images"))
    with psycopg.connect(host.env_values["IMAGEN_DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT j.status, i.metadata->>'local_path' FROM imagen.jobs j "
            "JOIN imagen.images i ON i.id = j.image_id"
        ).fetchone()
    assert row is not None and row[0] == "done"
    image = Path(row[1])
    assert image.is_file() and image.is_relative_to(images_dir)
    assert image.name in host.transcript[-1]
