from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AggregationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_MODE_UNSPECIFIED: _ClassVar[AggregationMode]
    AGGREGATION_MODE_PLAINTEXT: _ClassVar[AggregationMode]
    AGGREGATION_MODE_SECAGG: _ClassVar[AggregationMode]
    AGGREGATION_MODE_CKKS: _ClassVar[AggregationMode]

class RoundStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_STAGE_UNSPECIFIED: _ClassVar[RoundStage]
    ROUND_STAGE_ADVERTISE_KEYS: _ClassVar[RoundStage]
    ROUND_STAGE_SHARE_KEYS: _ClassVar[RoundStage]
    ROUND_STAGE_MASKED_INPUT: _ClassVar[RoundStage]
    ROUND_STAGE_CONSISTENCY_CHECK: _ClassVar[RoundStage]
    ROUND_STAGE_UNMASK: _ClassVar[RoundStage]
    ROUND_STAGE_DONE: _ClassVar[RoundStage]
    ROUND_STAGE_FAILED: _ClassVar[RoundStage]
    ROUND_STAGE_COLLECT: _ClassVar[RoundStage]
    ROUND_STAGE_DISTRIBUTE_KEYS: _ClassVar[RoundStage]

class DpKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DP_KIND_NONE: _ClassVar[DpKind]
    DP_KIND_CLIENT: _ClassVar[DpKind]
    DP_KIND_CENTRAL: _ClassVar[DpKind]
    DP_KIND_SAMPLE: _ClassVar[DpKind]

class DpMechanism(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DP_MECHANISM_UNSPECIFIED: _ClassVar[DpMechanism]
    DP_MECHANISM_DISCRETE_GAUSSIAN: _ClassVar[DpMechanism]
    DP_MECHANISM_SKELLAM: _ClassVar[DpMechanism]
AGGREGATION_MODE_UNSPECIFIED: AggregationMode
AGGREGATION_MODE_PLAINTEXT: AggregationMode
AGGREGATION_MODE_SECAGG: AggregationMode
AGGREGATION_MODE_CKKS: AggregationMode
ROUND_STAGE_UNSPECIFIED: RoundStage
ROUND_STAGE_ADVERTISE_KEYS: RoundStage
ROUND_STAGE_SHARE_KEYS: RoundStage
ROUND_STAGE_MASKED_INPUT: RoundStage
ROUND_STAGE_CONSISTENCY_CHECK: RoundStage
ROUND_STAGE_UNMASK: RoundStage
ROUND_STAGE_DONE: RoundStage
ROUND_STAGE_FAILED: RoundStage
ROUND_STAGE_COLLECT: RoundStage
ROUND_STAGE_DISTRIBUTE_KEYS: RoundStage
DP_KIND_NONE: DpKind
DP_KIND_CLIENT: DpKind
DP_KIND_CENTRAL: DpKind
DP_KIND_SAMPLE: DpKind
DP_MECHANISM_UNSPECIFIED: DpMechanism
DP_MECHANISM_DISCRETE_GAUSSIAN: DpMechanism
DP_MECHANISM_SKELLAM: DpMechanism

class TensorSlot(_message.Message):
    __slots__ = ("name", "shape", "offset")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ...) -> None: ...

class VectorLayout(_message.Message):
    __slots__ = ("tensors",)
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSlot]
    def __init__(self, tensors: _Optional[_Iterable[_Union[TensorSlot, _Mapping]]] = ...) -> None: ...

class QuantizationSpec(_message.Message):
    __slots__ = ("clip", "bits", "max_cohort", "max_weight", "scale")
    CLIP_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    MAX_COHORT_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    clip: float
    bits: int
    max_cohort: int
    max_weight: int
    scale: float
    def __init__(self, clip: _Optional[float] = ..., bits: _Optional[int] = ..., max_cohort: _Optional[int] = ..., max_weight: _Optional[int] = ..., scale: _Optional[float] = ...) -> None: ...

class DpSpec(_message.Message):
    __slots__ = ("kind", "noise_multiplier", "clip_norm", "target_epsilon", "delta", "mechanism", "min_clients", "rotate", "scale", "sampling_prob", "planned_rounds", "rounding_beta", "coordinate_clip_prob", "overflow_prob")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    TARGET_EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    ROTATE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_PROB_FIELD_NUMBER: _ClassVar[int]
    PLANNED_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ROUNDING_BETA_FIELD_NUMBER: _ClassVar[int]
    COORDINATE_CLIP_PROB_FIELD_NUMBER: _ClassVar[int]
    OVERFLOW_PROB_FIELD_NUMBER: _ClassVar[int]
    kind: DpKind
    noise_multiplier: float
    clip_norm: float
    target_epsilon: float
    delta: float
    mechanism: DpMechanism
    min_clients: int
    rotate: bool
    scale: float
    sampling_prob: float
    planned_rounds: int
    rounding_beta: float
    coordinate_clip_prob: float
    overflow_prob: float
    def __init__(self, kind: _Optional[_Union[DpKind, str]] = ..., noise_multiplier: _Optional[float] = ..., clip_norm: _Optional[float] = ..., target_epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., mechanism: _Optional[_Union[DpMechanism, str]] = ..., min_clients: _Optional[int] = ..., rotate: _Optional[bool] = ..., scale: _Optional[float] = ..., sampling_prob: _Optional[float] = ..., planned_rounds: _Optional[int] = ..., rounding_beta: _Optional[float] = ..., coordinate_clip_prob: _Optional[float] = ..., overflow_prob: _Optional[float] = ...) -> None: ...

class PrivacyReport(_message.Message):
    __slots__ = ("kind", "epsilon", "delta", "round_epsilon", "rounds", "noise_multiplier", "clip_norm", "mechanism", "min_clients", "sampling_prob", "accountant", "rigorous", "noise_std", "contributors", "trusts_server", "note")
    KIND_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    ROUND_EPSILON_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_PROB_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTANT_FIELD_NUMBER: _ClassVar[int]
    RIGOROUS_FIELD_NUMBER: _ClassVar[int]
    NOISE_STD_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    TRUSTS_SERVER_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    kind: DpKind
    epsilon: float
    delta: float
    round_epsilon: float
    rounds: int
    noise_multiplier: float
    clip_norm: float
    mechanism: DpMechanism
    min_clients: int
    sampling_prob: float
    accountant: str
    rigorous: bool
    noise_std: float
    contributors: int
    trusts_server: bool
    note: str
    def __init__(self, kind: _Optional[_Union[DpKind, str]] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., round_epsilon: _Optional[float] = ..., rounds: _Optional[int] = ..., noise_multiplier: _Optional[float] = ..., clip_norm: _Optional[float] = ..., mechanism: _Optional[_Union[DpMechanism, str]] = ..., min_clients: _Optional[int] = ..., sampling_prob: _Optional[float] = ..., accountant: _Optional[str] = ..., rigorous: _Optional[bool] = ..., noise_std: _Optional[float] = ..., contributors: _Optional[int] = ..., trusts_server: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class CkksSpec(_message.Message):
    __slots__ = ("preset", "key_epoch", "key_holder", "key_fingerprint", "value_bound", "rotate_every", "chunk_count")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEY_HOLDER_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    VALUE_BOUND_FIELD_NUMBER: _ClassVar[int]
    ROTATE_EVERY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    preset: str
    key_epoch: int
    key_holder: str
    key_fingerprint: bytes
    value_bound: float
    rotate_every: int
    chunk_count: int
    def __init__(self, preset: _Optional[str] = ..., key_epoch: _Optional[int] = ..., key_holder: _Optional[str] = ..., key_fingerprint: _Optional[bytes] = ..., value_bound: _Optional[float] = ..., rotate_every: _Optional[int] = ..., chunk_count: _Optional[int] = ...) -> None: ...

class LoraPlan(_message.Message):
    __slots__ = ("rank", "alpha", "target_modules", "variant", "seed", "heterogeneous")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    HETEROGENEOUS_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    variant: str
    seed: int
    heterogeneous: bool
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., variant: _Optional[str] = ..., seed: _Optional[int] = ..., heterogeneous: _Optional[bool] = ...) -> None: ...

class FederationPlan(_message.Message):
    __slots__ = ("name", "base_model", "base_model_hash", "lora", "dimension", "layout_sha256", "rounds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    base_model: str
    base_model_hash: bytes
    lora: LoraPlan
    dimension: int
    layout_sha256: bytes
    rounds: int
    def __init__(self, name: _Optional[str] = ..., base_model: _Optional[str] = ..., base_model_hash: _Optional[bytes] = ..., lora: _Optional[_Union[LoraPlan, _Mapping]] = ..., dimension: _Optional[int] = ..., layout_sha256: _Optional[bytes] = ..., rounds: _Optional[int] = ...) -> None: ...

class RoundSpec(_message.Message):
    __slots__ = ("round_id", "mode", "dimension", "layout", "quantization", "threshold", "neighbours", "min_cohort", "max_cohort", "roster", "model_hash", "dp", "aead", "session_id", "chunk_bytes", "stage_timeout_s", "ckks", "plan", "buffer_size")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    MIN_COHORT_FIELD_NUMBER: _ClassVar[int]
    MAX_COHORT_FIELD_NUMBER: _ClassVar[int]
    ROSTER_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    DP_FIELD_NUMBER: _ClassVar[int]
    AEAD_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    STAGE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    CKKS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    mode: AggregationMode
    dimension: int
    layout: VectorLayout
    quantization: QuantizationSpec
    threshold: int
    neighbours: int
    min_cohort: int
    max_cohort: int
    roster: _containers.RepeatedScalarFieldContainer[str]
    model_hash: bytes
    dp: DpSpec
    aead: str
    session_id: bytes
    chunk_bytes: int
    stage_timeout_s: float
    ckks: CkksSpec
    plan: FederationPlan
    buffer_size: int
    def __init__(self, round_id: _Optional[int] = ..., mode: _Optional[_Union[AggregationMode, str]] = ..., dimension: _Optional[int] = ..., layout: _Optional[_Union[VectorLayout, _Mapping]] = ..., quantization: _Optional[_Union[QuantizationSpec, _Mapping]] = ..., threshold: _Optional[int] = ..., neighbours: _Optional[int] = ..., min_cohort: _Optional[int] = ..., max_cohort: _Optional[int] = ..., roster: _Optional[_Iterable[str]] = ..., model_hash: _Optional[bytes] = ..., dp: _Optional[_Union[DpSpec, _Mapping]] = ..., aead: _Optional[str] = ..., session_id: _Optional[bytes] = ..., chunk_bytes: _Optional[int] = ..., stage_timeout_s: _Optional[float] = ..., ckks: _Optional[_Union[CkksSpec, _Mapping]] = ..., plan: _Optional[_Union[FederationPlan, _Mapping]] = ..., buffer_size: _Optional[int] = ...) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("spec", "stage")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    spec: RoundSpec
    stage: RoundStage
    def __init__(self, spec: _Optional[_Union[RoundSpec, _Mapping]] = ..., stage: _Optional[_Union[RoundStage, str]] = ...) -> None: ...

class KeyAdvertisement(_message.Message):
    __slots__ = ("client_id", "encryption_key", "masking_key", "self_mask_commitment", "signature")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_KEY_FIELD_NUMBER: _ClassVar[int]
    MASKING_KEY_FIELD_NUMBER: _ClassVar[int]
    SELF_MASK_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    encryption_key: bytes
    masking_key: bytes
    self_mask_commitment: bytes
    signature: bytes
    def __init__(self, client_id: _Optional[str] = ..., encryption_key: _Optional[bytes] = ..., masking_key: _Optional[bytes] = ..., self_mask_commitment: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class AdvertiseKeysRequest(_message.Message):
    __slots__ = ("round_id", "advertisement")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    ADVERTISEMENT_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    advertisement: KeyAdvertisement
    def __init__(self, round_id: _Optional[int] = ..., advertisement: _Optional[_Union[KeyAdvertisement, _Mapping]] = ...) -> None: ...

class NeighbourKeys(_message.Message):
    __slots__ = ("advertisements",)
    ADVERTISEMENTS_FIELD_NUMBER: _ClassVar[int]
    advertisements: _containers.RepeatedCompositeFieldContainer[KeyAdvertisement]
    def __init__(self, advertisements: _Optional[_Iterable[_Union[KeyAdvertisement, _Mapping]]] = ...) -> None: ...

class EncryptedShare(_message.Message):
    __slots__ = ("sender", "recipient", "ciphertext")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    recipient: str
    ciphertext: bytes
    def __init__(self, sender: _Optional[str] = ..., recipient: _Optional[str] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class ShareKeysRequest(_message.Message):
    __slots__ = ("round_id", "client_id", "shares")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    client_id: str
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, round_id: _Optional[int] = ..., client_id: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class RelayedShares(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class VectorChunk(_message.Message):
    __slots__ = ("round_id", "client_id", "index", "data", "total_bytes", "checksum", "weight", "key_fingerprint")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    client_id: str
    index: int
    data: bytes
    total_bytes: int
    checksum: bytes
    weight: int
    key_fingerprint: bytes
    def __init__(self, round_id: _Optional[int] = ..., client_id: _Optional[str] = ..., index: _Optional[int] = ..., data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ..., checksum: _Optional[bytes] = ..., weight: _Optional[int] = ..., key_fingerprint: _Optional[bytes] = ...) -> None: ...

class UploadStatusRequest(_message.Message):
    __slots__ = ("round_id", "client_id")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    client_id: str
    def __init__(self, round_id: _Optional[int] = ..., client_id: _Optional[str] = ...) -> None: ...

class UploadStatus(_message.Message):
    __slots__ = ("next_index", "complete")
    NEXT_INDEX_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    next_index: int
    complete: bool
    def __init__(self, next_index: _Optional[int] = ..., complete: _Optional[bool] = ...) -> None: ...

class SurvivorSet(_message.Message):
    __slots__ = ("survivors",)
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, survivors: _Optional[_Iterable[str]] = ...) -> None: ...

class UploadAck(_message.Message):
    __slots__ = ("received_bytes",)
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    received_bytes: int
    def __init__(self, received_bytes: _Optional[int] = ...) -> None: ...

class SurvivorSignature(_message.Message):
    __slots__ = ("client_id", "signature")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    signature: bytes
    def __init__(self, client_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ConfirmSurvivorsRequest(_message.Message):
    __slots__ = ("round_id", "signature")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    signature: SurvivorSignature
    def __init__(self, round_id: _Optional[int] = ..., signature: _Optional[_Union[SurvivorSignature, _Mapping]] = ...) -> None: ...

class UnmaskInstructions(_message.Message):
    __slots__ = ("survivors", "dropped", "signatures")
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    signatures: _containers.RepeatedCompositeFieldContainer[SurvivorSignature]
    def __init__(self, survivors: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[str]] = ..., signatures: _Optional[_Iterable[_Union[SurvivorSignature, _Mapping]]] = ...) -> None: ...

class RevealedShare(_message.Message):
    __slots__ = ("owner", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    share: bytes
    def __init__(self, owner: _Optional[str] = ..., share: _Optional[bytes] = ...) -> None: ...

class UnmaskRequest(_message.Message):
    __slots__ = ("round_id", "client_id", "self_mask_shares", "key_shares")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SELF_MASK_SHARES_FIELD_NUMBER: _ClassVar[int]
    KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    client_id: str
    self_mask_shares: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    key_shares: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    def __init__(self, round_id: _Optional[int] = ..., client_id: _Optional[str] = ..., self_mask_shares: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ..., key_shares: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ...) -> None: ...

class UnmaskAck(_message.Message):
    __slots__ = ("stage",)
    STAGE_FIELD_NUMBER: _ClassVar[int]
    stage: RoundStage
    def __init__(self, stage: _Optional[_Union[RoundStage, str]] = ...) -> None: ...

class CkksWrappedKey(_message.Message):
    __slots__ = ("recipient", "ciphertext")
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    recipient: str
    ciphertext: bytes
    def __init__(self, recipient: _Optional[str] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class CkksKeyPublication(_message.Message):
    __slots__ = ("round_id", "client_id", "key_epoch", "key_fingerprint", "public_context", "sealed_context", "wrapped_keys")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SEALED_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEYS_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    client_id: str
    key_epoch: int
    key_fingerprint: bytes
    public_context: bytes
    sealed_context: bytes
    wrapped_keys: _containers.RepeatedCompositeFieldContainer[CkksWrappedKey]
    def __init__(self, round_id: _Optional[int] = ..., client_id: _Optional[str] = ..., key_epoch: _Optional[int] = ..., key_fingerprint: _Optional[bytes] = ..., public_context: _Optional[bytes] = ..., sealed_context: _Optional[bytes] = ..., wrapped_keys: _Optional[_Iterable[_Union[CkksWrappedKey, _Mapping]]] = ...) -> None: ...

class CkksPublicationAck(_message.Message):
    __slots__ = ("key_fingerprint",)
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    key_fingerprint: bytes
    def __init__(self, key_fingerprint: _Optional[bytes] = ...) -> None: ...

class FetchCkksKeysRequest(_message.Message):
    __slots__ = ("round_id", "client_id")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    client_id: str
    def __init__(self, round_id: _Optional[int] = ..., client_id: _Optional[str] = ...) -> None: ...

class CkksKeyDelivery(_message.Message):
    __slots__ = ("key_epoch", "key_fingerprint", "holder", "sealed_context", "wrapped_key")
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    SEALED_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    key_epoch: int
    key_fingerprint: bytes
    holder: KeyAdvertisement
    sealed_context: bytes
    wrapped_key: bytes
    def __init__(self, key_epoch: _Optional[int] = ..., key_fingerprint: _Optional[bytes] = ..., holder: _Optional[_Union[KeyAdvertisement, _Mapping]] = ..., sealed_context: _Optional[bytes] = ..., wrapped_key: _Optional[bytes] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("round_id", "client_id")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    client_id: str
    def __init__(self, round_id: _Optional[int] = ..., client_id: _Optional[str] = ...) -> None: ...

class ResultHeader(_message.Message):
    __slots__ = ("round_id", "survivors", "total_weight", "dimension", "error_bound", "total_bytes", "mode", "key_fingerprint", "chunk_count", "privacy")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_BOUND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    round_id: int
    survivors: _containers.RepeatedScalarFieldContainer[str]
    total_weight: int
    dimension: int
    error_bound: float
    total_bytes: int
    mode: AggregationMode
    key_fingerprint: bytes
    chunk_count: int
    privacy: PrivacyReport
    def __init__(self, round_id: _Optional[int] = ..., survivors: _Optional[_Iterable[str]] = ..., total_weight: _Optional[int] = ..., dimension: _Optional[int] = ..., error_bound: _Optional[float] = ..., total_bytes: _Optional[int] = ..., mode: _Optional[_Union[AggregationMode, str]] = ..., key_fingerprint: _Optional[bytes] = ..., chunk_count: _Optional[int] = ..., privacy: _Optional[_Union[PrivacyReport, _Mapping]] = ...) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("header", "index", "data", "sha256")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    header: ResultHeader
    index: int
    data: bytes
    sha256: bytes
    def __init__(self, header: _Optional[_Union[ResultHeader, _Mapping]] = ..., index: _Optional[int] = ..., data: _Optional[bytes] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerStatus(_message.Message):
    __slots__ = ("round_open", "round_id", "mode", "stage", "expected_clients", "arrived_clients", "missing_clients", "connected_clients", "stage_opened_at", "stage_deadline", "stage_timeout_s", "enrolled_clients", "rounds_opened", "results_published", "last_failed_round", "last_failed_stage", "last_failure", "dp_epsilon_spent")
    ROUND_OPEN_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    ARRIVED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    STAGE_OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    STAGE_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    STAGE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_OPENED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILED_ROUND_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILED_STAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    DP_EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    round_open: bool
    round_id: int
    mode: AggregationMode
    stage: RoundStage
    expected_clients: int
    arrived_clients: int
    missing_clients: _containers.RepeatedScalarFieldContainer[str]
    connected_clients: _containers.RepeatedScalarFieldContainer[str]
    stage_opened_at: float
    stage_deadline: float
    stage_timeout_s: float
    enrolled_clients: int
    rounds_opened: int
    results_published: int
    last_failed_round: int
    last_failed_stage: RoundStage
    last_failure: str
    dp_epsilon_spent: float
    def __init__(self, round_open: _Optional[bool] = ..., round_id: _Optional[int] = ..., mode: _Optional[_Union[AggregationMode, str]] = ..., stage: _Optional[_Union[RoundStage, str]] = ..., expected_clients: _Optional[int] = ..., arrived_clients: _Optional[int] = ..., missing_clients: _Optional[_Iterable[str]] = ..., connected_clients: _Optional[_Iterable[str]] = ..., stage_opened_at: _Optional[float] = ..., stage_deadline: _Optional[float] = ..., stage_timeout_s: _Optional[float] = ..., enrolled_clients: _Optional[int] = ..., rounds_opened: _Optional[int] = ..., results_published: _Optional[int] = ..., last_failed_round: _Optional[int] = ..., last_failed_stage: _Optional[_Union[RoundStage, str]] = ..., last_failure: _Optional[str] = ..., dp_epsilon_spent: _Optional[float] = ...) -> None: ...
