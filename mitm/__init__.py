"""``kexlab mitm``: a man in the middle built from the core's own connections.

It wins exactly where the theory says it should (a client that accepts its key, a PSK
it could read on the way) and is caught everywhere else (a pinned or known key, a PSK it
does not hold, a SAS compared over an honest channel or aloud, any bit it changes).
"""

from .attack import Interception, MitmOptions, Verdict
from .proxy import MitmProxy, Tally
from .relay import Tamper, TamperingRelay

__all__ = [
    "Interception",
    "MitmOptions",
    "MitmProxy",
    "Tally",
    "Tamper",
    "TamperingRelay",
    "Verdict",
]
