"""``python -m server``: exactly ``kexlab server`` (the same typer command function)."""

from cli.common import single_command_app
from server.command import server

app = single_command_app(server, "server", "Serve KXP/1 (same as `kexlab server`).")

if __name__ == "__main__":
    app(prog_name="python -m server")
