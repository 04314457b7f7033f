//! Money you can audit: statement reconciliation, settlement, refunds and reversals,
//! write-offs.
