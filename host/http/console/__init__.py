"""The privacy office's console: server-rendered pages under /console/ for compliance officers.

No script, no third-party asset, one stylesheet of its own; every response carries a strict
Content-Security-Policy (`frame-ancestors 'none'`) and `Cache-Control: no-store`. The same policy
decides every read the console makes, and each is audited first, as over the API.
"""

from host.http.console.headers import ConsoleHeaders
from host.http.console.routes import router

__all__ = ["ConsoleHeaders", "router"]
