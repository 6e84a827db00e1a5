from nango.orchestrator.app import run
from nango.orchestrator.settings import OrchestratorSettings
from nango.process import serve

raise SystemExit(serve("orchestrator", OrchestratorSettings, run))
