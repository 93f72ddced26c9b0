"""``kexlab local-lab``: the whole out-of-band lab on this machine, without Docker.

An open MQTT broker, an eavesdropper on it, a server that takes PSKs over it, and a
client script, each a real process. By default they run under this one, every line
labelled with who printed it (``broker``, ``eve``, ``server``, ``client``) and a
``lab`` narrator between the steps; ``--tmux`` gives each its own pane instead.

The script: a psk client hands its key to the server over the broker (eve prints it),
talks, and a dhe client pins the key the server announced on the broker; then
``kexlab decrypt`` opens the recorded psk session with the key eve printed.

(About 420 lines: the lab's commands, the one-process runner and the tmux layout share
``Lab``; each part reads on its own.)
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from explain.console import printable

from .errors import fail

OPEN_CONF = Path(__file__).resolve().parent.parent / "oob" / "mosquitto" / "open.conf"
SERVER_ID = "lab"
COLOURS = {"lab": "bold", "broker": "blue", "eve": "red", "server": "magenta", "client": "cyan"}
LABEL_WIDTH = max(len(name) for name in COLOURS)
START_TIMEOUT = 15.0
STARTED: list[asyncio.subprocess.Process] = []
"""Every process the lab started: whatever ends the lab, none of them outlives it."""


def kexlab_argv(*args: str) -> list[str]:
    """This kexlab, whatever PATH says: the same interpreter runs the command group."""
    return [sys.executable, "-m", "cli.main", *args]


def find_tool(name: str) -> str | None:
    """A Mosquitto program on PATH or in the sbin folder Debian puts the broker in."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


class Lab:
    """The commands of the lab in ``folder``: broker, eavesdropper, server, clients."""

    def __init__(self, folder: Path, port: int, broker_port: int) -> None:
        self.folder = folder
        self.port = port
        self.broker_port = broker_port
        self.url = f"mqtt://127.0.0.1:{broker_port}"
        self.mosquitto = find_tool("mosquitto")
        self.mosquitto_sub = find_tool("mosquitto_sub")
        self.env = {**os.environ, "KEXLAB_HOME": str(folder / "home")}
        for name in ("KEXLAB_MQTT_USERNAME", "KEXLAB_MQTT_PASSWORD_FILE", "KEXLAB_MQTT_CA"):
            self.env.pop(name, None)  # the open lab broker takes no login

    def broker(self) -> list[str]:
        """Mosquitto with the shipped open.conf on our port, or the embedded broker."""
        if self.mosquitto is None:
            return kexlab_argv("broker", "--port", str(self.broker_port))
        conf = OPEN_CONF.read_text(encoding="utf-8")
        conf = re.sub(r"(?m)^listener .*$", f"listener {self.broker_port} 127.0.0.1", conf)
        if os.geteuid() == 0:  # as root Mosquitto would switch to a user that cannot read it
            conf += f"\nuser {getpass.getuser()}\n"
        path = self.folder / "open.conf"
        path.write_text(conf, encoding="utf-8")
        return [self.mosquitto, "-c", str(path)]

    def eve(self, debug: bool = False) -> list[str] | None:
        """mosquitto_sub on every kexlab topic (-d: it says when the broker has subscribed it)."""
        if self.mosquitto_sub is None:
            return None
        argv = [self.mosquitto_sub, "-h", "127.0.0.1", "-p", str(self.broker_port)]
        return [*argv, *(["-d"] if debug else []), "-t", "kexlab/#", "-v"]

    @staticmethod
    def line_buffered(argv: list[str]) -> list[str]:
        """mosquitto_sub writing to a pipe holds its lines back; stdbuf makes it say each."""
        stdbuf = shutil.which("stdbuf")
        return [stdbuf, "-oL", *argv] if stdbuf else argv

    def server(self) -> list[str]:
        return kexlab_argv(
            "server", "--port", str(self.port), "--oob", self.url, "--server-id", SERVER_ID,
            "--pcap", str(self.folder / "lab.pcap"),
        )  # fmt: skip

    def clients(self) -> list[tuple[str, list[str]]]:
        """The script: what each client shows, and its command."""
        address = f"127.0.0.1:{self.port}"
        oob = ["--oob", self.url, "--server-id", SERVER_ID]
        return [
            (
                "a psk client makes a fresh key and hands it to the server over the broker"
                " (watch eve), then talks under it",
                kexlab_argv("client", address, "--kex", "psk", *oob,
                            "--send", "the vault code is 0451"),
            ),
            (
                "a dhe client pins the server key announced on the broker (--trust mqtt):"
                " only as trustworthy as who may write that topic",
                kexlab_argv("client", address, "--trust", "mqtt", *oob,
                            "--send", "meet me at 9"),
            ),
        ]  # fmt: skip

    def decrypt(self, psks: Sequence[str]) -> list[str]:
        args = [arg for spec in psks for arg in ("--psk", spec)]
        return kexlab_argv("decrypt", str(self.folder / "lab.pcap"), *args)


def local_lab(
    port: Annotated[
        int, typer.Option(min=1, max=65535, metavar="PORT", help="The kexlab server's port.")
    ] = 9700,
    broker_port: Annotated[
        int,
        typer.Option(min=1, max=65535, metavar="PORT", help="The MQTT broker's port."),
    ] = 1883,
    folder: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            metavar="DIR",
            file_okay=False,
            help="Where the lab keeps its files (KEXLAB_HOME, lab.pcap). Default: a new"
            " folder in /tmp.",
            show_default=False,
        ),
    ] = None,
    tmux: Annotated[
        bool,
        typer.Option("--tmux", help="One tmux pane each for broker, eve, server and client."),
    ] = False,
    once: Annotated[
        bool,
        typer.Option("--once", help="Stop after the script instead of waiting for Ctrl-C."),
    ] = False,
) -> None:
    """Run the whole MQTT lab here, without Docker. Broker, eavesdropper, server and clients, labelled."""
    for taken, option in ((port, "--port"), (broker_port, "--broker-port")):
        if not port_free(taken):
            fail(f"port {taken} is in use on 127.0.0.1: choose another with {option}")
    if port == broker_port:
        raise typer.BadParameter("must differ from --port", param_hint="'--broker-port'")
    where = folder if folder is not None else Path(tempfile.mkdtemp(prefix="kexlab-lab-"))
    where.mkdir(parents=True, exist_ok=True)
    lab = Lab(where.resolve(), port, broker_port)
    if tmux:
        _tmux(lab)
        return
    try:
        code = asyncio.run(_run(lab, once))
    except KeyboardInterrupt:
        code = 0
    except LabError as exc:
        fail(str(exc))
    finally:
        _stop_all()
    raise typer.Exit(code)


def _stop_all() -> None:
    """SIGTERM to any process of the lab still running (the orderly stop ran first)."""
    for proc in STARTED:
        if proc.returncode is None:  # not reaped: its pid is still its own
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGTERM)
    STARTED.clear()


def port_free(port: int) -> bool:
    """Nothing holds 127.0.0.1:port (bound as the lab's servers bind it)."""
    with socket.socket() as sock:
        # As the servers bind: a port whose last connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- one process


class _Output:
    """Labelled lines on one console; remembers what eve saw."""

    def __init__(self) -> None:
        self.console = Console(highlight=False, soft_wrap=True)
        self.seen: dict[str, list[str]] = {}
        """Every line each program printed, shown or not."""
        self.closed = False

    def say(self, label: str, text: str) -> None:
        if self.closed:
            return
        line = Text(f"{label:<{LABEL_WIDTH}} | ", style=COLOURS.get(label, ""))
        line.append(printable(text))  # a line from the broker or a peer is not obeyed
        try:
            self.console.print(line)
        except (BrokenPipeError, SystemExit):  # rich's answer to a closed pipe (| head)
            self.closed = True  # the lab still ends in order, stopping what it started


async def _pump(out: _Output, label: str, stream: asyncio.StreamReader, hide: str = "") -> None:
    while raw := await stream.readline():
        text = raw.decode("utf-8", "replace").rstrip("\n")
        out.seen.setdefault(label, []).append(text)
        if not (hide and re.match(hide, text)):
            out.say(label, text)


async def _start(
    out: _Output, label: str, argv: list[str], env: dict[str, str], hide: str = ""
) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        start_new_session=True,  # Ctrl-C reaches us; we stop them in order
    )
    STARTED.append(proc)
    assert proc.stdout is not None
    return proc, asyncio.create_task(_pump(out, label, proc.stdout, hide))


async def _ready(out: _Output, label: str, pattern: str, proc: asyncio.subprocess.Process) -> None:
    """Wait until ``label`` printed a line matching ``pattern`` (its own word that it is ready).

    Not a probe of its port: a probe would show up in the lab as a stranger's connection.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while not any(re.search(pattern, line) for line in out.seen.get(label, [])):
        if proc.returncode is not None:
            raise LabError(
                f"the {label} stopped (exit code {proc.returncode}): see its lines above"
            )
        if time.monotonic() > deadline:
            raise LabError(f"the {label} did not say it was ready within {START_TIMEOUT:g} s")
        await asyncio.sleep(0.05)


class LabError(Exception):
    """A part of the lab did not start."""


async def _run(lab: Lab, once: bool) -> int:
    out = _Output()
    running: list[tuple[asyncio.subprocess.Process, asyncio.Task[None], str]] = []
    out.say("lab", f"files in {lab.folder} (KEXLAB_HOME={lab.folder / 'home'})")
    try:
        broker, task = await _start(out, "broker", lab.broker(), lab.env)
        running.append((broker, task, "broker"))
        await _ready(
            out, "broker", r"mosquitto version \S+ running|kexlab broker: listening", broker
        )
        eve_argv = lab.eve(debug=True)
        if eve_argv is None:
            out.say("lab", "no mosquitto_sub: no eavesdropper (apt install mosquitto-clients)")
        else:
            out.say("lab", f"eve subscribes to every kexlab topic: {shlex.join(lab.eve() or [])}")
            # -d says when the broker has subscribed eve; the rest of its debug stays hidden.
            hide = r"Client \S+ |Subscribed \(mid"
            eve, task = await _start(out, "eve", lab.line_buffered(eve_argv), lab.env, hide=hide)
            running.append((eve, task, "eve"))
            await _ready(out, "eve", r"received SUBACK", eve)
        server, task = await _start(out, "server", lab.server(), lab.env)
        running.append((server, task, "server"))
        await _ready(out, "server", r"^oob: MQTT: subscribed", server)
        code = 0
        for what, argv in lab.clients():
            out.say("lab", what)
            out.say("lab", "$ " + shlex.join(["kexlab", *argv[3:]]))
            client, task = await _start(out, "client", argv, lab.env)
            code = max(code, await client.wait())
            await task
        _stop(server, signal.SIGINT)  # close_notify to every client, the capture completed
        await server.wait()
        await _decrypt(out, lab)
        if not once:
            out.say("lab", f"still up: broker on {lab.url}, eve; Ctrl-C stops it")
            await asyncio.Event().wait()
        return code
    finally:
        for proc, task, _label in reversed(running):
            _stop(proc, signal.SIGTERM)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)


async def _decrypt(out: _Output, lab: Lab) -> None:
    """What eve can do with what she saw: open the recorded psk session."""
    leaked = []
    for line in out.seen.get("eve", []):
        topic, _, payload = line.partition(" ")
        if "/psk/" in topic:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                doc = json.loads(payload)
                leaked.append(f"{doc['identity']}={doc['key']}")
    if not leaked:
        return
    out.say("lab", "eve decrypts the server's capture with the key she read off the broker:")
    argv = lab.decrypt(leaked)
    out.say("lab", "$ " + shlex.join(["kexlab", *argv[3:]]))
    env = {**lab.env, "COLUMNS": "100"}
    proc, task = await _start(out, "eve", argv, env)
    await proc.wait()
    await task


def _stop(proc: asyncio.subprocess.Process, sig: int) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


# --------------------------------------------------------------------------- tmux


def tmux_panes(lab: Lab) -> dict[str, tuple[str | None, list[tuple[str, bool]]]]:
    """Each pane's command (None: a shell) and the keys typed into it, (text, press Enter).

    The programs run as the panes' commands, and the session keeps a pane whose program
    ended (``remain-on-exit``), so its last words stay on screen. Mosquitto reloads on the
    SIGHUP that ``tmux kill-session`` sends instead of stopping: a small sh wrapper stops it.
    """
    folder = shlex.quote(str(lab.folder))
    bin_dir = shlex.quote(str(Path(sys.executable).parent))
    broker = shlex.join(lab.broker())
    stop_with_pane = (
        f'trap \'kill "$p" 2>/dev/null; exit\' HUP INT TERM; {broker} & p=$!; wait "$p"'
    )
    eve = lab.eve()
    eve_command = (
        f"sleep 1; exec {shlex.join(eve)}"
        if eve
        else "echo 'no mosquitto_sub: apt install mosquitto-clients'"
    )
    client_keys = [(f"export PATH={bin_dir}:$PATH; cd {folder}; clear", True)]
    for what, argv in lab.clients():  # the script, as comments to read and commands to copy
        client_keys += [(f"# {what}:", True), (f"#   {_shown(argv)}", True)]
    # The first client typed in, not run: Enter is the student's.
    client_keys.append((_shown(lab.clients()[0][1]), False))
    return {
        "broker": (shlex.join(["sh", "-c", stop_with_pane]), []),
        "eve": (eve_command, []),
        "server": (f"sleep 1; exec {shlex.join(lab.server())}", []),
        "client": (None, client_keys),
    }


def _shown(argv: list[str]) -> str:
    """A kexlab command as a student types it (``kexlab ...``, not the interpreter's path)."""
    return shlex.join(["kexlab", *argv[3:]])


def _tmux_run(args: list[str]) -> str:
    done = subprocess.run(["tmux", *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _tmux_start(lab: Lab, session: str) -> dict[str, tuple[str, list[tuple[str, bool]]]]:
    """Four panes (broker and server left, eve and the client right): id and keys of each."""
    spec = tmux_panes(lab)
    env = ["-e", f"KEXLAB_HOME={lab.folder / 'home'}", "-c", str(lab.folder)]
    show = ["-P", "-F", "#{pane_id}"]

    def command(role: str) -> list[str]:
        text = spec[role][0]
        return [] if text is None else [text]

    broker = _tmux_run(["new-session", "-d", "-s", session, "-x", "200", "-y", "50",
                        *env, *show, *command("broker")])  # fmt: skip
    _tmux_run(["set-option", "-t", session, "remain-on-exit", "on"])
    eve = _tmux_run(["split-window", "-t", broker, "-h", *env, *show, *command("eve")])
    server = _tmux_run(["split-window", "-t", broker, "-v", *env, *show, *command("server")])
    client = _tmux_run(["split-window", "-t", eve, "-v", *env, *show, *command("client")])
    ids = {"broker": broker, "eve": eve, "server": server, "client": client}
    return {role: (ids[role], spec[role][1]) for role in ids}


def _tmux(lab: Lab) -> None:
    if shutil.which("tmux") is None:
        fail("--tmux needs tmux (apt install tmux); without --tmux the lab runs in this terminal")
    session = f"kexlab-lab-{lab.port}"
    if subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0:
        fail(f"a tmux session {session} exists already: tmux attach -t {session}, or kill it")
    try:
        for pane, keys in _tmux_start(lab, session).values():
            for text, enter in keys:
                _tmux_run(["send-keys", "-t", pane, "-l", text])
                if enter:
                    _tmux_run(["send-keys", "-t", pane, "Enter"])
    except subprocess.CalledProcessError as exc:
        fail(f"tmux {' '.join(exc.cmd[1:3])} failed: {(exc.stderr or '').strip() or exc}")
    typer.echo(f"the lab runs in tmux session {session} (files in {lab.folder})")
    typer.echo(f"  tmux attach -t {session}      and, to stop it: tmux kill-session -t {session}")
    if sys.stdin.isatty() and "TMUX" not in os.environ:
        os.execvp("tmux", ["tmux", "attach", "-t", session])
