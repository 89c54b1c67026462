"""Attacks on a released model: membership and extraction of planted canaries.

`canaries` (what is planted), `target` (what an output attack queries), the likelihood
family (`language_model`, `likelihood`), the generation-only family (`generator`,
`generation`, `overlap`), their measures (`metrics`, `empirical_epsilon`), one
membership audit (`membership`), and the output `filters` that try to stop extraction.
"""
