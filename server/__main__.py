"""``python -m server``: exactly ``kexlab server``.

An entry point, like the ``kexlab`` console script, not a module of the ``server``
package: it runs the command line (``cli``, the top floor) by name, so nothing in the
package imports the floor above it.
"""

import runpy

runpy.run_module("cli.server_command", run_name="__main__", alter_sys=True)
