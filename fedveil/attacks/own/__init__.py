"""Attack your own artifacts: a team's base model, the adapter deltas its parties send,
and the records it suspects leak (`fedveil attack`).

Why a package of its own: the audit attacks built-in targets it makes itself; here the
target is whatever a team hands in, so everything starts with reading and checking files
(`delta_file`, `lora_source`, `records`), then builds the same attack targets the audit
uses from the team's model (`model_target`), runs the existing update attacks on it
(`run`) and scores each given record against what they recovered (`per_record`), for
`report` to write.
"""
