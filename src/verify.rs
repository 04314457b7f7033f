//! `repayd verify`: streams the database and checks every ledger and loan invariant.
