"""The `kexlab` command line (typer): keygen, server, client, demo."""
