//! `repayd report daily`: the day's collections, success rates, buckets and recon cases, as
//! CSV and as a chart.
