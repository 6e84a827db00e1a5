from nango.process import serve
from nango.runner.app import run
from nango.runner.settings import RunnerSettings

raise SystemExit(serve("runner", RunnerSettings, run))
