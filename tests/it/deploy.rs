//! deploy/: the alert rules pass `promtool check rules`, and the original
//! guide's two alerts fire as their unit tests say (`promtool test rules`).

use std::process::Command;

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus"))
        .output()
        .expect("promtool is needed for this test (.ci/run installs Debian's prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
}

#[test]
fn the_memory_and_slow_query_alerts_fire_when_they_should() {
    let tested = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn alert_rules_name_only_series_a_node_exports() {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yml"
    ))
    .unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for series in [
        "memory_usage_percent",
        "db_query_duration_seconds",
        "websocket_connections",
        "bus_up",
        "chat_messages_total",
        "actor_restarts_total",
    ] {
        assert!(rules.contains(series), "{series} in alerts.yml");
        assert!(
            readme.contains(&format!("`{series}")),
            "{series} documented in README's metrics table"
        );
    }
}
