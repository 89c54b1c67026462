"""Pinned protection modes: a client takes part only in the modes its own policy allows.

Why: the round spec (and with it the protection mode) comes from the server. A client
that follows whatever mode is announced hands every raw update to a server that simply
announces `plaintext`, and turns "the server learns nothing" into "the server plus the
CKKS key holder learn everything" when it announces `ckks`. So the mode is checked
against `ClientPolicy.allowed_modes` right after the spec is read, before any byte of
the update (or of a CKKS key request) leaves the client.
"""

from __future__ import annotations

from fedveil.errors import ConfigError, ModeDowngradeError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.protocol.config import ClientPolicy

MODE_NAMES: dict[int, str] = {
    pb.AGGREGATION_MODE_SECAGG: "secagg",
    pb.AGGREGATION_MODE_CKKS: "ckks",
    pb.AGGREGATION_MODE_PLAINTEXT: "plaintext",
}
_HOW_TO_OPT_IN: dict[str, str] = {
    "ckks": (
        "if the federation really runs CKKS (the key holder must not collude with the "
        "server), opt in with ClientPolicy(allowed_modes={'secagg', 'ckks'}) or "
        "`fedveil client --allow-mode ckks`"
    ),
    "plaintext": (
        "plaintext shows every update to the server and is for benchmarks only: opt in "
        "with ClientPolicy(allowed_modes={..., 'plaintext'}) or "
        "`fedveil client --allow-plaintext-for-benchmarks`"
    ),
    "secagg": "opt in with ClientPolicy(allowed_modes={'secagg', ...})",
}


def require_allowed_mode(round_id: int, mode: int, policy: ClientPolicy | None) -> str:
    """The announced mode's name, or ModeDowngradeError if `policy` does not allow it.

    `policy` None means the default ClientPolicy (SecAgg only). An unknown mode number is
    refused too: a client cannot know what such a mode would reveal.
    """
    allowed = (policy or ClientPolicy()).allowed_modes
    name = MODE_NAMES.get(mode)
    if name is None:
        raise ModeDowngradeError(
            f"round {round_id} announces an unknown protection mode ({mode}); this client "
            f"takes part only in {sorted(allowed)} and sent nothing"
        )
    if name not in allowed:
        raise ModeDowngradeError(
            f"round {round_id} announces {name} mode, which this client's policy does not "
            f"allow (allowed: {sorted(allowed)}); nothing of the update was sent. "
            f"{_HOW_TO_OPT_IN[name]}"
        )
    return name


def allowed_modes_from_flags(
    allow_mode: tuple[str, ...], allow_plaintext_for_benchmarks: bool
) -> frozenset[str]:
    """`fedveil client`'s pin: SecAgg always, CKKS with `--allow-mode ckks`, plaintext only
    with the separately named benchmark flag (so no config typo can ask for it)."""
    modes = {"secagg"}
    for mode in allow_mode:
        if mode == "plaintext":
            raise ConfigError(
                "--allow-mode plaintext is refused: plaintext shows the update to the server; "
                "a benchmark passes --allow-plaintext-for-benchmarks"
            )
        if mode not in ("secagg", "ckks"):
            raise ConfigError(f"--allow-mode takes ckks (or secagg), got {mode!r}")
        modes.add(mode)
    if allow_plaintext_for_benchmarks is True:
        modes.add("plaintext")
    elif allow_plaintext_for_benchmarks is not False:
        raise ConfigError(
            "allow_plaintext_for_benchmarks must be true or false, got "
            f"{allow_plaintext_for_benchmarks!r}"
        )
    return frozenset(modes)
