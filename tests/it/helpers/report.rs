//! What a hardening test tried and what happened, for docs/reliability.md.
//!
//! `make reliability` runs the suite with `AURUM_RELIABILITY_OUT` naming a
//! JSON-lines file; every case a test records is appended there (one line
//! each, so parallel test processes never interleave within a line), and
//! `scripts/reliability.py` turns the file into the report. Without the
//! variable nothing is written: the assertions are the test, the record is
//! only its account.

use std::io::Write;

/// Records one case: its `area` (a table of the report: "socket input",
/// "rest input", "abuse", "faults", ...), what was tried, what happened, and
/// the figures measured (`("acked lost", "0")`, `("held", "19000 sockets")`).
pub fn record(area: &str, case: &str, outcome: &str, figures: &[(&str, String)]) {
    let Some(path) = std::env::var_os("AURUM_RELIABILITY_OUT") else {
        return;
    };
    let figures: serde_json::Map<String, serde_json::Value> = figures
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone().into()))
        .collect();
    let line = serde_json::json!({
        "area": area,
        "case": case,
        "outcome": outcome,
        "figures": figures,
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("AURUM_RELIABILITY_OUT {path:?}: {error}"));
    // One write per line: O_APPEND keeps concurrent writers' lines whole.
    file.write_all(format!("{line}\n").as_bytes()).unwrap();
}
