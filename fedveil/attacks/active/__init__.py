"""Active-server and collusion attacks, driven against the real protocol classes.

Why a package of its own: the audit matrix otherwise models an honest-but-curious server
for one round. Each module here plays a server that deviates (crafted aggregates, model
inconsistency), colludes with an enrolled client (CKKS), or enrols its own clients
(Sybils), and reports what the real client-side defences refuse, detect or let through.
Each entry point returns a frozen dataclass the audit can turn into a row.
"""
