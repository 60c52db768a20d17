"""The event log: one event per passage, alerts, their queries, Redis streams and retention.

See ``README.md`` in this folder; ``EventLog.open`` wires everything from an ``EventsConfig``.
"""
