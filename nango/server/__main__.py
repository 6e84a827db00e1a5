from nango.process import serve
from nango.server.app import run
from nango.server.settings import ServerSettings

raise SystemExit(serve("server", ServerSettings, run))
