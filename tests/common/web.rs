//! Helpers for the collections workspace tests: the API served on a random port.
