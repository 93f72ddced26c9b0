"""``python -m client``: exactly ``kexlab client``.

An entry point, like the ``kexlab`` console script, not a module of the ``client``
package: it runs the command line (``cli``, the top floor) by name, so nothing in the
package imports the floor above it.
"""

import runpy

runpy.run_module("cli.client_command", run_name="__main__", alter_sys=True)
