"""The leakage audit: a matrix of protections x attacks, judged against thresholds.

config (TOML -> AuditConfig), matrix (which attack families exist and which cells a
protection claims to protect), jobs (the resumable units of work), evaluate (records ->
cells with checks), report (versioned report.json), html (self-contained report.html),
runner (runs the jobs and writes both). The command line is fedveil/commands/audit.py.
"""
