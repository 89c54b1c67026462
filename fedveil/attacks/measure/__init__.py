"""What benchmarks and `fedveil audit` read: the attacks run against targets under each
protection, as records.

`update_leakage` (image and label records, and the table of record functions), with
`observe` (settings and the protected views) and `text_leakage` (text and captioner
records); `output_leakage` (a released model's membership and extraction records);
`captioner_filters` (the output filters on the captioner, and their cost).
"""
