"""``kexlab bench``: kexlab against asyncio TLS 1.3 and plain TCP, server and client in separate processes.

The orchestrator (``bench.runner``) starts ``python -m bench.server`` once per
implementation and one ``python -m bench.client``, sends the client one job per
measurement over a pipe and collects one JSON result line per job.
"""
