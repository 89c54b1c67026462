"""The client SDK: what a party runs to join a federation over gRPC (transport, the per-mode
drivers, credentials and enrolment, the privacy ledger). No torch: training lives in
fedveil.learner, which builds on this package."""
