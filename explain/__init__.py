"""What a person sees of a session: annotated frames, secrets tables, the summary line.

The core says which bytes are which field (``protocol.dissect``); this package says what
they mean, in words for students, and renders them (rich tables for the terminal). The
server's log, the client, ``kexlab decrypt`` and the session page all use it, so a field
is explained in one place.
"""
