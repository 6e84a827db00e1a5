"""Orchestrator: schedules and tasks, their state machine, and long-poll dequeue by group."""
