from nango.jobs.app import run
from nango.jobs.settings import JobsSettings
from nango.process import serve

raise SystemExit(serve("jobs", JobsSettings, run))
