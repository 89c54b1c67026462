"""Attacks on what an observer of a round sees: one update, or an aggregate of them.

`base` (what the attacker observes, knows and returns), `run` (time and score an
attack), `metrics` (scores against the truth, next to a data-free baseline),
`local_training` (the client's recipe, differentiably), and the attacks: gradient
inversion (`gradient_matching`, `dlg`, `inverting_gradients`), `label_leakage`, and text
recovery from LoRA factors (`text_recovery`, `text_recovery_ffa`), and the bag of target
tokens from the LM head's LoRA (`token_bag`).
"""
