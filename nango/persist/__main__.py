from nango.persist.app import run
from nango.persist.settings import PersistSettings
from nango.process import serve

raise SystemExit(serve("persist", PersistSettings, run))
