"""Models and synthetic data to attack, all built offline from configs and seeds.

(a) `lenet`: the DLG LeNet on procedurally drawn 32x32 images (`shapes`);
(c) `tiny_lm`: a GPT-2 from a `GPT2Config` with a word-level vocabulary and peft LoRA.
(b), the built-in vision-language captioner, plugs in as an `InversionTarget` (image
inversion with caption tokens as given labels) and a `TokenTarget` (its decoder's first
adapted layer) once clients/ provides it.
"""
