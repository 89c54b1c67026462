"""Secure rounds inside a team's own training loop: a peft adapter's delta goes through the
aggregation service and the aggregate comes back into the model (`SecureRound`), or a
`transformers.Trainer` does it every N steps or each epoch (`SecureRoundCallback`)."""

from fedveil.learner.federation.secure_round import SecureRound, SecureRoundResult, infer_layout
from fedveil.learner.federation.trainer_callback import SecureRoundCallback

__all__ = ["SecureRound", "SecureRoundCallback", "SecureRoundResult", "infer_layout"]
