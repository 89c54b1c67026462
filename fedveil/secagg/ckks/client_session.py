"""One client's side of a CKKS round: get the epoch's key, encrypt, decrypt the sum.

Why the checks here: the server relays everything, so the client verifies what it can.
Advertisements must carry enrolled signatures over this round's session id (no key
substitution); the holder's advertisement delivered with the sealed context must be the
one the client saw (no swap); the opened context must match the fingerprint bound into
its encryption. A client refuses rounds below its own minimum cohort, in the roster and
in the result's contributor count, since every key holder could decrypt a "sum" of one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedveil.errors import (
    CohortTooSmallError,
    ConfigError,
    InvalidSignatureError,
    KeySubstitutionError,
    ProtocolError,
    SessionMismatchError,
)
from fedveil.secagg.ckks.codec import decrypt_mean, encrypt_update
from fedveil.secagg.ckks.config import CkksRoundConfig
from fedveil.secagg.ckks.distribution import (
    KeyBinding,
    ckks_advertisement_message,
    open_secret_context,
    seal_secret_context,
)
from fedveil.secagg.ckks.keys import CkksKeyring, check_secret_context
from fedveil.secagg.ckks.messages import (
    CkksAdvertisement,
    CkksResult,
    KeyDelivery,
    KeyPublication,
    WrappedKey,
)
from fedveil.secagg.crypto.identity import SigningIdentity, VerifyingIdentity
from fedveil.secagg.protocol.config import ClientPolicy, check_enrolment


class EpochKeyStore:
    """The secret contexts a client holds, by public-context fingerprint.

    Kept across rounds: the key is distributed once per epoch. Only the newest few
    epochs are kept, so a rotated-out key stops being usable on this client.
    """

    def __init__(self, keep: int = 2) -> None:
        if keep < 1:
            raise ConfigError(f"keep must be >= 1, got {keep}")
        self._keep = keep
        self._keys: OrderedDict[bytes, tuple[int, CkksKeyring]] = OrderedDict()

    def add(self, key_epoch: int, keyring: CkksKeyring) -> bytes:
        fingerprint = keyring.fingerprint()
        self._keys[fingerprint] = (key_epoch, keyring)
        while len(self._keys) > self._keep:
            self._keys.popitem(last=False)
        return fingerprint

    def get(self, fingerprint: bytes) -> CkksKeyring | None:
        entry = self._keys.get(fingerprint)
        return entry[1] if entry else None


class CkksClientSession:
    """One client's participation in one CKKS round."""

    def __init__(
        self,
        config: CkksRoundConfig,
        client_id: str,
        identity: SigningIdentity,
        roster_identities: Mapping[str, VerifyingIdentity],
        keys: EpochKeyStore,
        policy: ClientPolicy | None = None,
        *,
        expected_model_hash: bytes | None = None,
    ) -> None:
        policy = policy or ClientPolicy()
        check_enrolment(config.roster, client_id, identity, roster_identities)
        if expected_model_hash is not None and expected_model_hash != config.model_hash:
            raise SessionMismatchError(
                "the round's global model hash differs from the model this client holds"
            )
        if config.min_cohort < policy.min_cohort:
            raise CohortTooSmallError(
                f"the round accepts results of {config.min_cohort} clients, below this "
                f"client's minimum cohort {policy.min_cohort}"
            )
        if config.dimension > policy.max_dimension:
            raise ConfigError(
                f"round dimension {config.dimension} exceeds this client's limit "
                f"{policy.max_dimension}"
            )
        self.config = config
        self.client_id = client_id
        self.policy = policy
        self._identity = identity
        self._identities = dict(roster_identities)
        self._keys = keys
        self._encryption_key = X25519PrivateKey.generate()
        self._holder: CkksAdvertisement | None = None
        self._fingerprint = config.key_fingerprint

    @property
    def is_key_holder(self) -> bool:
        return self.client_id == self.config.key_holder

    @property
    def has_key(self) -> bool:
        return self._keys.get(self._fingerprint) is not None

    def advertise(self) -> CkksAdvertisement:
        """The signed X25519 key the epoch's secret context will be sealed to."""
        if not self.config.distributes_keys:
            raise ProtocolError("this round reuses the epoch's keys; there is nothing to advertise")
        public = self._encryption_key.public_key().public_bytes_raw()
        message = ckks_advertisement_message(self.config.session_id, self.client_id, public)
        return CkksAdvertisement(self.client_id, public, self._identity.sign(message))

    def _verified(self, advert: CkksAdvertisement) -> CkksAdvertisement:
        identity = self._identities.get(advert.client_id)
        if identity is None:
            raise KeySubstitutionError(f"advertisement from unenrolled {advert.client_id!r}")
        message = ckks_advertisement_message(
            self.config.session_id, advert.client_id, advert.encryption_key
        )
        try:
            identity.verify(advert.signature, message)
        except InvalidSignatureError as exc:
            raise KeySubstitutionError(
                f"the key advertised for {advert.client_id!r} is not signed by its enrolled "
                "identity for this session: the server substituted or replayed it"
            ) from exc
        return advert

    def handle_advertisements(self, adverts: Sequence[CkksAdvertisement]) -> KeyPublication | None:
        """The holder answers with the key publication; any other client with None."""
        by_id = {a.client_id: self._verified(a) for a in adverts}
        if len(by_id) != len(adverts):
            raise ProtocolError("the server relayed two advertisements for one client")
        own_key = self._encryption_key.public_key().public_bytes_raw()
        relayed_own = by_id.get(self.client_id)
        if relayed_own is not None and relayed_own.encryption_key != own_key:
            raise KeySubstitutionError("the server relayed another key under this client's id")
        holder = by_id.get(self.config.key_holder)
        if holder is None:
            raise ProtocolError(f"the key holder {self.config.key_holder!r} did not advertise")
        self._holder = holder
        if not self.is_key_holder:
            return None
        if len(by_id) < self.config.min_cohort:
            raise CohortTooSmallError(
                f"only {len(by_id)} clients advertised, below min_cohort {self.config.min_cohort}"
            )
        keyring = CkksKeyring.generate(self.config.preset)
        self._fingerprint = self._keys.add(self.config.key_epoch, keyring)
        binding = self._binding()
        recipients = {c: a.encryption_key for c, a in by_id.items() if c != self.client_id}
        sealed = seal_secret_context(keyring, self._encryption_key, recipients, binding)
        return KeyPublication(
            client_id=self.client_id,
            key_epoch=self.config.key_epoch,
            fingerprint=self._fingerprint,
            public_context=keyring.public().to_bytes(),
            sealed_context=sealed.ciphertext,
            wrapped_keys=tuple(WrappedKey(r, c) for r, c in sealed.wrapped_keys.items()),
        )

    def _binding(self) -> KeyBinding:
        return KeyBinding(
            self.config.session_id, self.config.key_epoch, self.config.key_holder, self._fingerprint
        )

    def handle_delivery(self, delivery: KeyDelivery) -> bytes:
        """Open the sealed secret context, check it is the round's preset; returns its
        fingerprint."""
        if self._holder is None:
            raise ProtocolError("key delivery before the advertisements were seen")
        if delivery.holder != self._holder:
            raise KeySubstitutionError(
                "the key delivery names another holder key than the one advertised"
            )
        if delivery.key_epoch != self.config.key_epoch:
            raise ProtocolError(
                f"the delivery is for epoch {delivery.key_epoch}, the round's is "
                f"{self.config.key_epoch}"
            )
        self._fingerprint = delivery.fingerprint
        keyring = open_secret_context(
            self.client_id,
            self._encryption_key,
            self._holder.encryption_key,
            delivery.sealed_context,
            delivery.wrapped_key,
            self._binding(),
        )
        check_secret_context(keyring, self.config.preset, self.config.key_epoch)
        return self._keys.add(self.config.key_epoch, keyring)

    def _keyring(self) -> CkksKeyring:
        keyring = self._keys.get(self._fingerprint)
        if keyring is None:
            raise ConfigError(
                f"this client holds no secret context for key epoch {self.config.key_epoch} "
                "(it missed that epoch's key distribution); it takes part again from the "
                "next epoch"
            )
        return keyring

    @property
    def fingerprint(self) -> bytes:
        return self._fingerprint

    def encrypt(self, update: np.ndarray, weight: int, *, workers: int = 1) -> list[bytes]:
        """Clip to the round's value bound and encrypt: one ciphertext per chunk."""
        if update.ndim != 1 or update.shape[0] != self.config.dimension:
            raise ConfigError(
                f"update must be a 1-D vector of {self.config.dimension} values, got shape "
                f"{update.shape}"
            )
        if not np.all(np.isfinite(update)):
            raise ConfigError("update holds NaN or infinite values")
        bound = self.config.value_bound
        clipped = np.clip(np.asarray(update, dtype=np.float64), -bound, bound)
        return encrypt_update(
            self._keyring(),
            self.config.preset,
            clipped,
            weight,
            max_weight=self.config.max_weight,
            value_bound=bound,
            weight_scale=self.config.weight_scale,
            workers=workers,
        )

    def decrypt(self, result: CkksResult) -> tuple[np.ndarray, float]:
        """(weighted mean, total weight) of the round, refusing too small a cohort."""
        if len(result.survivors) < max(self.policy.min_cohort, self.config.min_cohort):
            raise CohortTooSmallError(
                f"the result sums {len(result.survivors)} uploads, below this client's minimum "
                f"cohort {max(self.policy.min_cohort, self.config.min_cohort)}: refusing to "
                "decrypt what could be a single client's update"
            )
        return decrypt_mean(
            self._keyring(),
            list(result.ciphertexts),
            self.config.dimension,
            max_weight=self.config.max_weight,
            weight_scale=self.config.weight_scale,
        )
