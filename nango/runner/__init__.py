"""Runner: executes customer functions in isolated worker processes with CPU, memory and wall-time
limits; hosts the in-function SDK."""
