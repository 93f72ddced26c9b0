"""``python -m client``: exactly ``kexlab client`` (the same typer command function)."""

from cli.common import single_command_app
from client.command import client

app = single_command_app(client, "client", "Connect to a KXP/1 server (same as `kexlab client`).")

if __name__ == "__main__":
    app(prog_name="python -m client")
