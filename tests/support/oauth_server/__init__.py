"""A real, strict OAuth 2.0 authorization server (django-oauth-toolkit) for the auth tests.

`harness.OAuthServer` starts it as a subprocess on loopback and drives its test-control API. The Django
project itself (`authserver/`, `manage.py`, `serve.py`) only ever runs inside that subprocess.
"""
