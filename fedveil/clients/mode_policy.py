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
from fedveil.proto.convert import mode_from_wire
from fedveil.secagg.modes import MODE_SPECS, AggregationMode
from fedveil.secagg.protocol.config import ClientPolicy

# What `fedveil client --allow-mode` takes: plaintext has its own, separately named flag.
_ALLOW_MODE_FLAG = (AggregationMode.SECAGG, AggregationMode.CKKS)


def _names(modes: frozenset[AggregationMode]) -> list[str]:
    """The modes' spellings, sorted, as the messages print them."""
    return sorted(mode.value for mode in modes)


def require_allowed_mode(round_id: int, mode: int, policy: ClientPolicy | None) -> AggregationMode:
    """The announced mode (its wire number `mode`), or ModeDowngradeError if `policy`
    does not allow it.

    `policy` None means the default ClientPolicy (SecAgg only). An unknown mode number is
    refused too: a client cannot know what such a mode would reveal.
    """
    allowed = (policy or ClientPolicy()).allowed_modes
    announced = mode_from_wire(mode)
    if announced is None:
        raise ModeDowngradeError(
            f"round {round_id} announces an unknown protection mode ({mode}); this client "
            f"takes part only in {_names(allowed)} and sent nothing"
        )
    if announced not in allowed:
        raise ModeDowngradeError(
            f"round {round_id} announces {announced.value} mode, which this client's policy "
            f"does not allow (allowed: {_names(allowed)}); nothing of the update was sent. "
            f"{MODE_SPECS[announced].how_to_opt_in}"
        )
    return announced


def allowed_modes_from_flags(
    allow_mode: tuple[str, ...], allow_plaintext_for_benchmarks: bool
) -> frozenset[AggregationMode]:
    """`fedveil client`'s pin: SecAgg always, CKKS with `--allow-mode ckks`, plaintext only
    with the separately named benchmark flag (so no config typo can ask for it)."""
    modes = {AggregationMode.SECAGG}
    for name in allow_mode:
        if name == AggregationMode.PLAINTEXT:
            raise ConfigError(
                "--allow-mode plaintext is refused: plaintext shows the update to the server; "
                "a benchmark passes --allow-plaintext-for-benchmarks"
            )
        if name not in _ALLOW_MODE_FLAG:
            raise ConfigError(f"--allow-mode takes ckks (or secagg), got {name!r}")
        modes.add(AggregationMode(name))
    if allow_plaintext_for_benchmarks is True:
        modes.add(AggregationMode.PLAINTEXT)
    elif allow_plaintext_for_benchmarks is not False:
        raise ConfigError(
            "allow_plaintext_for_benchmarks must be true or false, got "
            f"{allow_plaintext_for_benchmarks!r}"
        )
    return frozenset(modes)
