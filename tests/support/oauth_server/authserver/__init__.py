"""Django project of the test authorization server."""
