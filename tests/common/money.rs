//! Helpers for the reconciliation, refund and write-off tests.
