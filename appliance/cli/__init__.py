"""applctl, the administrator's command line: one module per group of commands.

app.py holds the root command and the error handling; output.py the shared
conventions (errors, --json, tables, colour); hub.py, host.py and daemon_calls.py the
three things applctl talks to (the hub's REST API, systemd and /proc, the root daemon).
"""
