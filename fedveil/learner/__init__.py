"""The learner: what a party runs to fine-tune its LoRA adapters (the built-in captioner and
its data, LoRA, local training with and without DP-SGD, evaluation, the in-process
federation, and secure rounds from a team's own loop or Trainer: learner.federation). It
needs fedveil[train]; the wire SDK it hands updates to is fedveil.clients."""
