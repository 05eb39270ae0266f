//! deploy/: every file parses and passes the tool that knows its format
//! (kubernetes-validate, the compose-spec schema, promtool, haproxy,
//! hadolint), and the pieces agree with each other and with the server:
//! the grace period covers the drain, the nodes wait for the migration,
//! every variable set is one `aurum serve` reads.
//!
//! The Python tools live in a venv that `scripts/deploy-tools.sh` makes
//! (`.ci/run` calls it), at `AURUM_CI_VENV` or `~/.cache/aurum-ci/venv`;
//! they are run from there, and from PATH when it has none. Not through
//! PATH first: the venv's `python3` would shadow the one other tests use.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
/// The oldest Kubernetes these manifests are meant for.
const KUBERNETES_VERSION: &str = "1.30.0";

struct Ran {
    ok: bool,
    text: String,
}

/// `tool` from the deploy tools' venv when it is there, else from PATH.
fn locate(tool: &str) -> PathBuf {
    let venv = std::env::var_os("AURUM_CI_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/aurum-ci/venv")));
    venv.map(|venv| venv.join("bin").join(tool))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(tool))
}

fn run(tool: &str, args: &[&str], dir: &Path) -> Ran {
    let output = Command::new(locate(tool))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {tool} ({e}): scripts/deploy-tools.sh installs the Python tools \
                 (into $AURUM_CI_VENV or ~/.cache/aurum-ci/venv); promtool and haproxy are \
                 Debian's prometheus and haproxy packages (.ci/run installs all of them)"
            )
        });
    Ran {
        ok: output.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

fn must_run(tool: &str, args: &[&str], dir: &Path) -> String {
    let ran = run(tool, args, dir);
    assert!(ran.ok, "{tool} {args:?}:\n{}", ran.text);
    ran.text
}

fn promtool(args: &[&str]) -> String {
    must_run("promtool", args, &Path::new(DEPLOY).join("prometheus"))
}

/// Every document of a YAML file, as JSON (PyYAML's safe loader: what
/// kubectl and compose accept, YAML 1.1 booleans included).
fn yaml_documents(path: &Path) -> Vec<Value> {
    const TO_JSON: &str = "import json, sys, yaml\n\
        with open(sys.argv[1]) as f:\n    docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
        json.dump(docs, sys.stdout)";
    let path = path.to_str().unwrap();
    // The venv's python, which has PyYAML.
    let json = must_run("python", &["-c", TO_JSON, path], Path::new(DEPLOY));
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_document(path: &Path) -> Value {
    let mut documents = yaml_documents(path);
    assert_eq!(documents.len(), 1, "{path:?} holds one document");
    documents.remove(0)
}

fn deploy_files(extensions: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, extensions, out);
            } else if path
                .extension()
                .is_some_and(|e| extensions.contains(&e.to_str().unwrap()))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(DEPLOY), extensions, &mut out);
    out.sort();
    out
}

fn k8s_objects() -> Vec<(PathBuf, Value)> {
    deploy_files(&["yaml"])
        .into_iter()
        .filter(|path| path.starts_with(Path::new(DEPLOY).join("k8s")))
        .flat_map(|path| {
            yaml_documents(&path)
                .into_iter()
                .map(move |object| (path.clone(), object))
        })
        .collect()
}

fn k8s_object(kind: &str, name: &str) -> Value {
    k8s_objects()
        .into_iter()
        .map(|(_, object)| object)
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
}

fn seconds(value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s
            .trim_end_matches('s')
            .parse()
            .unwrap_or_else(|_| panic!("seconds: {s:?}")),
        other => panic!("seconds: {other}"),
    }
}

fn compose() -> Value {
    yaml_document(&Path::new(DEPLOY).join("compose.yaml"))
}

/// The variables `aurum serve` reads, from its own `--help`.
fn variables_aurum_reads() -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_aurum"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_owned())
        .collect()
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
    let rules = std::fs::read_to_string(Path::new(DEPLOY).join("prometheus/alerts.yml")).unwrap();
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

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = deploy_files(&["yaml", "yml"]);
    // compose, collector, prometheus (3), and the Kubernetes files.
    assert!(files.len() >= 10, "found only {files:?}");
    for file in files {
        assert!(!yaml_documents(&file).is_empty(), "{file:?} is empty");
    }
}

#[test]
fn kubernetes_objects_pass_kubernetes_validate_strict() {
    let k8s = Path::new(DEPLOY).join("k8s");
    let objects = k8s_objects();
    // The Prometheus Operator's kinds are CRDs, with no schema in
    // kubernetes-validate; their rules are checked with promtool below.
    let operator = |object: &Value| {
        object["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("monitoring.coreos.com/")
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut count = 0;
    for (path, object) in &objects {
        if operator(object) {
            assert!(
                objects
                    .iter()
                    .filter(|(p, _)| p == path)
                    .all(|(_, o)| operator(o)),
                "{path:?} mixes Prometheus Operator objects with built-in ones: keep them apart, \
                 so the built-in ones are validated"
            );
            continue;
        }
        count += 1;
        if !files.contains(path) {
            files.push(path.clone());
        }
    }
    let mut args = vec!["--strict", "-k", KUBERNETES_VERSION];
    let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    args.extend(&names);
    let validated = must_run("kubernetes-validate", &args, &k8s);
    assert_eq!(
        validated.matches(" passed for resource ").count(),
        count,
        "every object validated:\n{validated}"
    );
    assert!(!validated.contains("WARN"), "{validated}");
    for kind in [
        "ConfigMap",
        "Secret",
        "Job",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ] {
        assert!(
            objects.iter().any(|(_, o)| o["kind"] == kind),
            "no {kind} in deploy/k8s"
        );
    }

    // The check can fail: a field Kubernetes does not know is refused.
    let broken = std::env::temp_dir().join(format!("aurum-broken-{}.yaml", std::process::id()));
    let deployment = std::fs::read_to_string(k8s.join("30-deployment.yaml")).unwrap();
    std::fs::write(
        &broken,
        deployment.replace("terminationGracePeriodSeconds:", "terminationGracePeriod:"),
    )
    .unwrap();
    let refused = run(
        "kubernetes-validate",
        &["--strict", "-k", KUBERNETES_VERSION, broken.to_str().unwrap()],
        &k8s,
    );
    std::fs::remove_file(&broken).unwrap();
    assert!(!refused.ok, "an unknown field passed:\n{}", refused.text);
}

#[test]
fn the_prometheus_rule_holds_the_rules_of_alerts_yml() {
    let file_rules = yaml_document(&Path::new(DEPLOY).join("prometheus/alerts.yml"));
    let rule = k8s_object("PrometheusRule", "aurum");
    assert_eq!(
        rule["spec"]["groups"], file_rules["groups"],
        "deploy/k8s/50-monitoring.yaml's PrometheusRule and deploy/prometheus/alerts.yml differ"
    );
    // The same check promtool gives the file, on the rules as Kubernetes has them.
    let extracted = std::env::temp_dir().join(format!("aurum-prometheusrule-{}.json", std::process::id()));
    std::fs::write(&extracted, serde_json::to_vec(&rule["spec"]).unwrap()).unwrap();
    let checked = run(
        "promtool",
        &["check", "rules", extracted.to_str().unwrap()],
        Path::new(DEPLOY),
    );
    std::fs::remove_file(&extracted).unwrap();
    assert!(
        checked.ok && checked.text.contains("SUCCESS: 6 rules found"),
        "{}",
        checked.text
    );
    // Prometheus scrapes the Service's REST port, where /metrics is.
    let monitor = k8s_object("ServiceMonitor", "aurum");
    let service = k8s_object("Service", "aurum");
    let port = &monitor["spec"]["endpoints"][0]["port"];
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| &p["name"] == port && p["port"] == 8080),
        "the ServiceMonitor's port {port} is the Service's REST port"
    );
}

#[test]
fn the_deployment_drains_within_its_grace_period_on_cpu_requests_alone() {
    let config = k8s_object("ConfigMap", "aurum");
    let drain_delay = seconds(&config["data"]["DRAIN_DELAY"]);
    let shutdown_timeout = seconds(&config["data"]["SHUTDOWN_TIMEOUT"]);
    let deployment = k8s_object("Deployment", "aurum");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let grace = seconds(&pod["terminationGracePeriodSeconds"]);
    assert!(
        grace >= pre_stop + drain_delay + shutdown_timeout + 5,
        "terminationGracePeriodSeconds {grace} must cover a preStop sleep ({pre_stop}), \
         DRAIN_DELAY ({drain_delay}) and SHUTDOWN_TIMEOUT ({shutdown_timeout}) with margin"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health/live");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health/ready");
    let resources = &container["resources"];
    assert!(resources["requests"]["cpu"].is_string(), "a CPU request");
    assert!(
        resources["limits"]["cpu"].is_null(),
        "no CPU limit: a CFS quota shows up as tail latency"
    );
    assert!(resources["limits"]["memory"].is_string(), "a memory limit");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let hpa = k8s_object("HorizontalPodAutoscaler", "aurum");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 20);
    let metric = &hpa["spec"]["metrics"][0]["resource"];
    assert_eq!(metric["name"], "memory");
    assert_eq!(metric["target"]["averageUtilization"], 70);
    let scale_down = &hpa["spec"]["behavior"]["scaleDown"];
    for policy in scale_down["policies"].as_array().unwrap() {
        assert!(
            policy["type"] == "Pods" && policy["value"].as_u64().unwrap() <= 1,
            "scale down one pod at a time: {policy}"
        );
    }
    assert!(seconds(&scale_down["stabilizationWindowSeconds"]) >= 300);
    let job = k8s_object("Job", "aurum-migrate");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["migrate"])
    );
}

#[test]
fn every_variable_deploy_sets_is_one_aurum_reads() {
    let reads = variables_aurum_reads();
    assert!(reads.iter().any(|v| v == "DATABASE_URL"), "{reads:?}");
    let mut set: Vec<(String, &str)> = Vec::new();
    for (_, object) in k8s_objects() {
        for key in ["data", "stringData"] {
            if let Some(map) = object[key].as_object()
                && (object["kind"] == "ConfigMap" || object["kind"] == "Secret")
            {
                set.extend(map.keys().map(|k| (k.clone(), "deploy/k8s")));
            }
        }
        if object["kind"] == "Deployment" {
            for env in object["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
            {
                set.push((env["name"].as_str().unwrap().to_owned(), "the Deployment"));
            }
        }
    }
    for (name, service) in compose()["services"].as_object().unwrap() {
        if let Some(env) = service["environment"].as_object() {
            if service["image"] == "aurum:local" {
                set.extend(env.keys().map(|k| (k.clone(), "deploy/compose.yaml")));
            } else {
                assert!(!name.starts_with("aurum"), "{name} runs the aurum image");
            }
        }
    }
    assert!(set.len() > 10, "{set:?}");
    for (variable, place) in set {
        // The OpenTelemetry SDK reads the standard OTEL_* variables itself.
        assert!(
            variable != "MIGRATE_ON_START",
            "{place} sets MIGRATE_ON_START: the nodes never migrate"
        );
        assert!(
            reads.contains(&variable) || variable.starts_with("OTEL_"),
            "{place} sets {variable}, which `aurum serve` does not read"
        );
    }
}

#[test]
fn compose_passes_the_compose_spec_schema() {
    let checked = must_run(
        "check-jsonschema",
        &["--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        Path::new(DEPLOY),
    );
    assert!(checked.contains("ok"), "{checked}");
    // The check can fail: a key the spec does not know is refused.
    let broken = std::env::temp_dir().join(format!("aurum-compose-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(Path::new(DEPLOY).join("compose.yaml")).unwrap();
    std::fs::write(&broken, text.replace("stop_grace_period:", "stop_grace:")).unwrap();
    let refused = run(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            broken.to_str().unwrap(),
        ],
        Path::new(DEPLOY),
    );
    std::fs::remove_file(&broken).unwrap();
    assert!(!refused.ok, "an unknown key passed:\n{}", refused.text);
}

#[test]
fn the_compose_stack_migrates_first_and_wires_every_piece() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    for name in [
        "postgres",
        "redis",
        "migrate",
        "aurum-a",
        "aurum-b",
        "lb",
        "prometheus",
        "otel-collector",
        "jaeger",
    ] {
        assert!(services.contains_key(name), "no {name} service");
    }
    assert_eq!(services["migrate"]["command"], serde_json::json!(["migrate"]));
    for node in ["aurum-a", "aurum-b"] {
        let service = &services[node];
        assert_eq!(
            service["depends_on"]["migrate"]["condition"], "service_completed_successfully",
            "{node} starts after the migration"
        );
        let probe = service["healthcheck"]["test"].to_string();
        assert!(probe.contains("/health/live"), "{node}: {probe}");
        assert!(seconds(&service["stop_grace_period"]) >= 35, "{node} drains");
        let env = &service["environment"];
        let collector = env["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str().unwrap();
        assert_eq!(collector, "http://otel-collector:4318");
        assert!(env["REDIS_URL"].as_str().unwrap().contains("//redis:"));
        assert!(env["DATABASE_URL"].as_str().unwrap().contains("@postgres:"));
    }
    assert_ne!(
        services["aurum-a"]["environment"]["NODE_ID"],
        services["aurum-b"]["environment"]["NODE_ID"]
    );
    // Every file mounted from deploy/ exists.
    let mut mounts = 0;
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with("./") {
                mounts += 1;
                assert!(Path::new(DEPLOY).join(source).is_file(), "{name} mounts {source}");
            }
        }
    }
    assert!(mounts >= 6, "{mounts} files mounted");
    // Prometheus scrapes both nodes; the collector takes OTLP/HTTP and
    // sends it on to Jaeger.
    let prometheus = yaml_document(&Path::new(DEPLOY).join("prometheus/prometheus.yml"));
    assert_eq!(
        prometheus["scrape_configs"][0]["static_configs"][0]["targets"],
        serde_json::json!(["aurum-a:8080", "aurum-b:8080"])
    );
    let collector = yaml_document(&Path::new(DEPLOY).join("otel/collector.yaml"));
    assert_eq!(
        collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "0.0.0.0:4318"
    );
    let exporters = &collector["service"]["pipelines"]["traces"]["exporters"];
    let exporter = &collector["exporters"][exporters[0].as_str().unwrap()];
    assert!(exporter["endpoint"].as_str().unwrap().starts_with("jaeger:"));
}

#[test]
fn prometheus_and_the_load_balancer_accept_their_configs() {
    let checked = promtool(&["check", "config", "prometheus.yml"]);
    assert!(
        checked.contains("is valid prometheus config file syntax"),
        "{checked}"
    );
    // The node names resolve only inside compose: haproxy warns and checks the rest.
    let haproxy = must_run("haproxy", &["-c", "-f", "haproxy/haproxy.cfg"], Path::new(DEPLOY));
    assert!(haproxy.contains("Configuration file is valid"), "{haproxy}");
    let config = std::fs::read_to_string(Path::new(DEPLOY).join("haproxy/haproxy.cfg")).unwrap();
    assert!(
        config.contains("cookie AURUM_NODE insert"),
        "sticky polling sessions"
    );
}

#[test]
fn the_dockerfile_passes_hadolint_and_never_migrates_or_runs_as_root() {
    let linted = run("hadolint", &["Dockerfile"], Path::new(DEPLOY));
    assert!(linted.ok, "hadolint:\n{}", linted.text);
    let dockerfile = std::fs::read_to_string(Path::new(DEPLOY).join("Dockerfile")).unwrap();
    let instructions: Vec<&str> = dockerfile
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .collect();
    assert!(
        !instructions.iter().any(|l| l.contains("MIGRATE_ON_START")),
        "the image never migrates at start"
    );
    let last_stage = instructions.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let user = instructions[last_stage..]
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER, for runAsNonRoot");
    assert_ne!(uid, 0);
    assert!(
        instructions
            .iter()
            .any(|l| l.contains("cargo build --release --locked"))
    );
    let ignored = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore")).unwrap();
    for entry in ["target/", ".git/", "node_modules/"] {
        assert!(
            ignored.lines().any(|l| l.ends_with(entry)),
            ".dockerignore leaves out {entry}"
        );
    }
}

#[actix_rt::test]
async fn the_postgresql_settings_name_settings_postgresql_has() {
    let text = std::fs::read_to_string(Path::new(DEPLOY).join("postgres/postgresql.conf")).unwrap();
    let settings: Vec<(&str, &str)> = text
        .lines()
        .map(|line| line.split('#').next().unwrap().trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap();
            (name.trim(), value.trim().trim_matches('\''))
        })
        .collect();
    assert!(settings.contains(&("autovacuum", "on")));
    let url = format!("{}/postgres", crate::helpers::db::server_url());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    actix_rt::spawn(connection);
    for (name, value) in settings {
        let row = client
            .query_opt(
                "SELECT vartype, coalesce(enumvals, '{}')::text[] FROM pg_settings WHERE name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("PostgreSQL has no setting {name}"));
        let (kind, choices): (String, Vec<String>) = (row.get(0), row.get(1));
        match kind.as_str() {
            "bool" => assert!(["on", "off"].contains(&value), "{name} = {value}"),
            "enum" => assert!(
                choices.iter().any(|c| c == value),
                "{name} = {value}: {choices:?}"
            ),
            _ => assert!(
                value.starts_with(|c: char| c.is_ascii_digit()),
                "{name} = {value}"
            ),
        }
    }
}
