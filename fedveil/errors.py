"""The one error hierarchy of fedveil.

Every error says what was wrong and what to do. Each class carries the name of the gRPC
status code the service layer answers with (`grpc_status`), so the crypto core stays
free of gRPC imports while the mapping lives next to the error it describes.
"""

from __future__ import annotations


class FedveilError(Exception):
    """Root of every error fedveil raises on purpose."""

    grpc_status: str = "INTERNAL"


# --- configuration -------------------------------------------------------------------


class ConfigError(FedveilError, ValueError):
    """A configuration value is out of range or inconsistent; the message names it."""

    grpc_status = "INVALID_ARGUMENT"


class RingOverflowError(ConfigError):
    """A sum over the cohort could wrap around the modular ring and corrupt the result."""


# --- cryptography --------------------------------------------------------------------


class CryptoError(FedveilError):
    """A cryptographic check failed."""

    grpc_status = "INVALID_ARGUMENT"


class InvalidSignatureError(CryptoError):
    """An Ed25519 signature does not verify for the claimed identity and message."""

    grpc_status = "UNAUTHENTICATED"


class DecryptionError(CryptoError):
    """An AEAD envelope failed to open: wrong key, wrong context or tampered bytes."""


class ShareError(CryptoError):
    """Base for Shamir secret-sharing failures."""


class InsufficientSharesError(ShareError):
    """Fewer shares than the threshold were supplied; the secret cannot be rebuilt."""

    grpc_status = "FAILED_PRECONDITION"


class InconsistentSharesError(ShareError):
    """The shares do not lie on one polynomial of the threshold's degree."""


# --- protocol ------------------------------------------------------------------------


class ProtocolError(FedveilError):
    """A protocol rule was broken by a peer or by the caller."""

    grpc_status = "FAILED_PRECONDITION"


class StageError(ProtocolError):
    """A message arrived in a stage that does not accept it (illegal transition)."""


class InvalidMessageError(ProtocolError):
    """A message is malformed: wrong length, unknown sender, wrong recipient..."""

    grpc_status = "INVALID_ARGUMENT"


class DuplicateSubmissionError(ProtocolError):
    """The same client already submitted this message in this round."""

    grpc_status = "ALREADY_EXISTS"


class UnknownClientError(ProtocolError):
    """The sender is not on the round's roster."""

    grpc_status = "PERMISSION_DENIED"


class ThresholdNotMetError(ProtocolError):
    """Too few clients remain for the round to finish; the round fails closed."""


class MaliciousServerError(ProtocolError):
    """A client refuses a server request that only a misbehaving server would send."""

    grpc_status = "PERMISSION_DENIED"


class KeySubstitutionError(MaliciousServerError):
    """An advertised key is not signed by the enrolled identity of its claimed owner."""


class ConflictingShareRequestError(MaliciousServerError):
    """The server asked for both the self-mask share and the key share of one peer."""


class CohortTooSmallError(MaliciousServerError):
    """A round, or its survivor set, is below the client's own minimum cohort/threshold."""


class SurvivorSetMismatchError(MaliciousServerError):
    """The server showed different survivor sets to different clients or stages."""


class SessionMismatchError(MaliciousServerError):
    """Peers derived different session ids (model inconsistency); the round fails closed."""


class SurvivorQuorumError(MaliciousServerError):
    """Too few roster members signed the survivor set for it to be the round's only one.

    A client reveals shares only against a survivor set signed by more than
    (roster + max_colluders) / 2 members: two disjoint views would need an honest client
    to sign twice (secagg.protocol.consistency).
    """


class ModeDowngradeError(MaliciousServerError):
    """The server announced a protection mode this client's policy does not allow
    (plaintext or CKKS to a SecAgg-only client); nothing of the update was sent."""


class ImplausibleAggregateError(MaliciousServerError):
    """The server returned an aggregate no honest cohort could have produced (a coordinate
    or norm beyond what clipped inputs sum to, or a total weight outside the cohort's
    bounds); the client refuses to apply it."""


class RepeatedUpdateError(ProtocolError):
    """The same update would be sent in two rounds without DP noise: differencing the two
    aggregates could isolate it. Add DP, or send a new update."""


# --- differential privacy ------------------------------------------------------------


class PrivacyBudgetExceededError(FedveilError):
    """Taking part in the next round would push cumulative epsilon past the budget.

    Raised by the client before it trains or uploads, so the round simply goes on without
    it; RESOURCE_EXHAUSTED because a privacy budget is a quota that does not come back.
    """

    grpc_status = "RESOURCE_EXHAUSTED"


class PrivacyPolicyError(FedveilError):
    """A round's DP terms do not meet this client's privacy policy: a client with a privacy
    budget was offered a round without DP noise, or a central-DP round it did not accept.

    Raised by the client before it sends anything, so the round goes on without it.
    """

    grpc_status = "FAILED_PRECONDITION"


# --- authentication ------------------------------------------------------------------


class UnauthenticatedError(FedveilError):
    """The caller presented no client certificate, or not the one it enrolled with."""

    grpc_status = "UNAUTHENTICATED"
