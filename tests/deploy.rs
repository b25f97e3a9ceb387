//! The operations kit under deploy/ (compose, Grafana, Prometheus, Kubernetes)
//! and the Dockerfile: metric names exist, alert rules pass their unit tests,
//! Prometheus scrapes a running service, manifests parse and reference files
//! that exist.
//!
//! Needs `promtool` and `prometheus` (Debian package `prometheus`) and python3
//! with PyYAML for YAML: the tests install them when missing
//! (`deploy/test-tools.sh`), and fail with a message naming the package when
//! they cannot.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod broker;
use broker::scenario::{feed, setup};
use broker::{tools, Broker};

/// Everything these tests run beyond the service, installed on first use.
const TOOLS: &[&str] = &["promtool", "prometheus", "pyyaml"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every YAML document in the file, as JSON (through python3 + PyYAML).
fn yaml_docs(rel: &str) -> Vec<Value> {
    tools::require(TOOLS);
    let path = root().join(rel);
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml\n\
             print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    assert!(
        out.status.success(),
        "cannot parse {} as YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python3 printed JSON")
}

/// The executable of one of [`TOOLS`], installing them all first if needed.
fn tool(name: &str) -> PathBuf {
    tools::require(TOOLS);
    tools::find(&[name]).unwrap_or_else(|| panic!("`{name}` installed but not on PATH"))
}

/// The metric names the service exports: `pub const X: &str = "leadscore_..."` in telemetry.rs.
fn exported() -> BTreeSet<String> {
    let src = read("src/service/telemetry.rs");
    let names: BTreeSet<String> = src
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const") && l.contains("&str"))
        .filter_map(|l| l.split('"').nth(1))
        .filter(|n| n.starts_with("leadscore_"))
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 10, "found only {names:?} in telemetry.rs");
    names
}

/// Every `leadscore_[a-z_]+` identifier in the text.
fn identifiers(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(pos) = text[i..].find("leadscore_") {
        let start = i + pos;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let mut end = start + "leadscore_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary && end > start + "leadscore_".len() {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// A series name to its metric family: histograms' `_bucket`, `_sum`, `_count`.
fn family(name: &str, known: &BTreeSet<String>) -> String {
    if known.contains(name) {
        return name.to_string();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if known.contains(base) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// The PromQL of the dashboard's panels and of the alert rules.
fn queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dash: Value = serde_json::from_str(&read("deploy/grafana/dashboards/leadscore.json"))
        .expect("the dashboard is JSON");
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("a target has an expr");
            out.push((format!("panel {:?}", panel["title"]), expr.to_string()));
        }
    }
    for doc in yaml_docs("deploy/prometheus/alerts.yml") {
        for group in doc["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                let expr = rule["expr"].as_str().expect("a rule has an expr");
                out.push((format!("alert {}", rule["alert"]), expr.to_string()));
            }
        }
    }
    out
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let known = exported();
    let mut used = BTreeSet::new();
    for (what, expr) in queries() {
        for id in identifiers(&expr) {
            let fam = family(&id, &known);
            assert!(
                known.contains(&fam),
                "{what} uses {id}, which the service does not export"
            );
            used.insert(fam);
        }
    }
    // Annotations and test series name metrics too.
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
    ] {
        for id in identifiers(&read(file)) {
            assert!(
                known.contains(&family(&id, &known)),
                "{file} names {id}, which is not exported"
            );
        }
    }
    for needed in [
        "leadscore_events_total",
        "leadscore_consumer_lag",
        "leadscore_dead_letters_total",
        "leadscore_changes_total",
        "leadscore_event_to_emit_seconds",
        "leadscore_restore_seconds",
        "leadscore_transactions_total",
        "leadscore_ready",
        "leadscore_leads",
        "leadscore_sla_breaches_total",
        "leadscore_sla_first_touch_seconds",
    ] {
        assert!(used.contains(needed), "no panel or alert uses {needed}");
    }
    let alerts = read("deploy/prometheus/alerts.yml");
    for alert in [
        "LeadscoreConsumerLagGrowing",
        "LeadscoreDeadLetters",
        "LeadscoreNoChanges",
        "LeadscoreNotReady",
        "LeadscoreTransactionAborts",
        "LeadscoreSlaBreaches",
    ] {
        assert!(
            alerts.contains(&format!("alert: {alert}")),
            "alerts.yml lacks {alert}"
        );
    }
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let promtool = tool("promtool");
    let dir = root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert has a firing and a not-firing case.
    let tests = read("deploy/prometheus/alerts_test.yml");
    for doc in yaml_docs("deploy/prometheus/alerts.yml") {
        for group in doc["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                let name = rule["alert"].as_str().unwrap();
                let cases: Vec<&str> = tests
                    .split("alertname: ")
                    .skip(1)
                    .filter(|c| c.starts_with(&format!("{name}\n")))
                    .collect();
                assert!(
                    cases.iter().any(|c| c.contains("exp_labels")),
                    "alerts_test.yml has no firing case for {name}"
                );
                assert!(
                    cases.iter().any(|c| c.contains("exp_alerts: []")),
                    "alerts_test.yml has no not-firing case for {name}"
                );
            }
        }
    }
}

/// Kills the child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `leadscore run` on the test broker, with events flowing; returns
/// it and its HTTP address (host:port).
fn service() -> (Proc, String) {
    let b = Broker::shared();
    let s = setup(b, "deploy", "exactly_once", 6_000, 41);
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(s.config.with_file_name("service.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["run", "--config", s.config.to_str().unwrap()])
        .env("LEADSCORE_HTTP_LISTEN", &addr)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("leadscore run starts");
    // Over a minute, so lag, latency and throughput are live while scraped.
    drop(feed(b, &s, Duration::from_secs(60)));
    (Proc(child), addr)
}

/// Series names in a Prometheus text exposition.
fn exposed(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_running_service_exports_the_metrics_and_prometheus_scrapes_it() {
    let prometheus = tool("prometheus");
    let known = exported();
    let (_service, addr) = service();

    // a) every metric the dashboard and alerts use is on /metrics (each is
    // exported from the start, at 0 until it counts something).
    let used: BTreeSet<String> = queries()
        .iter()
        .flat_map(|(_, e)| identifiers(e))
        .map(|id| family(&id, &known))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut missing: Vec<String>;
    loop {
        let families: BTreeSet<String> = match http_get(&addr, "/metrics") {
            Some((200, body)) => exposed(&body).iter().map(|n| family(n, &known)).collect(),
            _ => BTreeSet::new(),
        };
        for f in &families {
            if f.starts_with("leadscore_") {
                assert!(
                    known.contains(f),
                    "/metrics has {f}, which telemetry.rs does not declare"
                );
            }
        }
        missing = used
            .iter()
            .filter(|u| !families.contains(*u))
            .cloned()
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        missing.is_empty(),
        "the running service's /metrics lacks {missing:?}"
    );

    // c) Prometheus scrapes it (with the alert rules loaded).
    let tmp = std::env::temp_dir().join(format!("leadscore-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let config = tmp.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: leadscore\n    static_configs:\n      - targets: [\"{addr}\"]\n",
            root().join("deploy/prometheus/alerts.yml").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let prom_addr = format!("127.0.0.1:{port}");
    let _prom = Proc(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("no answer");
    let value = loop {
        if let Some((200, body)) = http_get(
            &prom_addr,
            "/api/v1/query?query=sum(leadscore_events_total)",
        ) {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let sample = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok());
            if let Some(x) = sample {
                break x;
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not return leadscore_events_total within 30 s; last answer: {last}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(value > 0.0, "sum(leadscore_events_total) is {value}");
    if let Some((200, body)) = http_get(&prom_addr, "/api/v1/rules") {
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["data"]["groups"]
                .as_array()
                .is_some_and(|g| !g.is_empty()),
            "Prometheus loaded no alert rules: {body}"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fn assert_exists(base: &Path, rel: &str, what: &str) {
    let p = base.join(rel);
    assert!(
        p.exists(),
        "{what} references {}, which does not exist",
        p.display()
    );
}

#[test]
fn compose_parses_and_its_files_exist() {
    let docs = yaml_docs("deploy/compose.yaml");
    assert_eq!(docs.len(), 1);
    let compose = &docs[0];
    let base = root().join("deploy");
    let services = compose["services"].as_object().expect("services");
    for needed in ["kafka", "topics", "leadscore", "prometheus", "grafana"] {
        assert!(
            services.contains_key(needed),
            "compose has no {needed} service"
        );
    }
    let named: BTreeSet<&String> = compose["volumes"]
        .as_object()
        .map(|v| v.keys().collect())
        .unwrap_or_default();
    for (name, svc) in services {
        for vol in svc["volumes"].as_array().into_iter().flatten() {
            let spec = vol.as_str().expect("short volume syntax");
            let source = spec.split(':').next().unwrap();
            if source.starts_with('.') || source.starts_with('/') {
                assert_exists(&base, source, &format!("compose service {name}"));
            } else {
                assert!(
                    named.contains(&source.to_string()),
                    "{name}: volume {source} is not declared"
                );
            }
        }
        if let Some(ctx) = svc["build"]["context"].as_str() {
            assert_exists(&base, ctx, &format!("compose service {name} build"));
            let file = svc["build"]["dockerfile"].as_str().unwrap_or("Dockerfile");
            assert_exists(
                &base.join(ctx),
                file,
                &format!("compose service {name} build"),
            );
        }
    }
    // The mounted config is a valid leadscore config for this network.
    let cfg: toml::Value = toml::from_str(&read("deploy/compose/leadscore.toml")).unwrap();
    assert_eq!(cfg["kafka"]["brokers"].as_str(), Some("kafka:9092"));
    assert_eq!(cfg["http"]["listen"].as_str(), Some("0.0.0.0:9464"));
    // Listening on 0.0.0.0, the lead endpoints need a token.
    assert!(
        services["leadscore"]["environment"]["LEADSCORE_HTTP_TOKEN"].is_string(),
        "compose gives leadscore no token"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["check"])
        .arg(root().join("deploy/compose/model.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/compose/model.toml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Prometheus config and Grafana provisioning parse.
    let prom = &yaml_docs("deploy/prometheus/prometheus.yml")[0];
    assert!(prom["scrape_configs"]
        .to_string()
        .contains("leadscore:9464"));
    for f in [
        "deploy/grafana/provisioning/datasources/prometheus.yaml",
        "deploy/grafana/provisioning/dashboards/leadscore.yaml",
    ] {
        assert_eq!(yaml_docs(f)[0]["apiVersion"], 1, "{f}");
    }
}

#[test]
fn k8s_manifests_parse_and_their_files_exist() {
    let base = root().join("deploy/k8s");
    let kust = &yaml_docs("deploy/k8s/kustomization.yaml")[0];
    let mut kinds = BTreeSet::new();
    let mut statefulset = Value::Null;
    for res in kust["resources"].as_array().expect("resources") {
        let rel = res.as_str().unwrap();
        assert_exists(&base, rel, "kustomization.yaml");
        for doc in yaml_docs(&format!("deploy/k8s/{rel}")) {
            let kind = doc["kind"]
                .as_str()
                .expect("a manifest has a kind")
                .to_string();
            if kind == "StatefulSet" {
                statefulset = doc.clone();
            }
            kinds.insert(kind);
        }
    }
    for kind in [
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} among the kustomization's resources"
        );
    }
    for gen in kust["configMapGenerator"]
        .as_array()
        .expect("configMapGenerator")
    {
        for f in gen["files"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            let path = f.split_once('=').map_or(f, |(_, p)| p);
            assert_exists(&base, path, "configMapGenerator");
        }
    }
    let spec = &statefulset["spec"]["template"]["spec"];
    assert!(spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(0) >= 60);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let c = &spec["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let env = c["env"].to_string();
    assert!(
        env.contains("LEADSCORE_KAFKA_INSTANCE_ID") && env.contains("metadata.name"),
        "{env}"
    );
    // Off loopback, the lead endpoints need the token: from a Secret, never
    // in the ConfigMap.
    let token = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LEADSCORE_HTTP_TOKEN")
        .expect("LEADSCORE_HTTP_TOKEN is set");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"]["key"], "token",
        "{token}"
    );
    assert!(
        token["valueFrom"]["secretKeyRef"]["name"].is_string(),
        "{token}"
    );
    // The other instances reach this pod by its stable name under the
    // headless Service, to forward lead queries; the variables it uses are
    // defined before it (Kubernetes expands only those).
    let names: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let url = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LEADSCORE_HTTP_ADVERTISED_URL")
        .and_then(|e| e["value"].as_str())
        .expect("LEADSCORE_HTTP_ADVERTISED_URL is set");
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    for var in ["LEADSCORE_KAFKA_INSTANCE_ID", "POD_NAMESPACE"] {
        assert!(url.contains(&format!("$({var})")), "{url}");
        assert!(
            pos(var) < pos("LEADSCORE_HTTP_ADVERTISED_URL"),
            "{var} first"
        );
    }
    assert!(
        url.contains(&format!(
            ".{}.",
            statefulset["spec"]["serviceName"].as_str().unwrap()
        )),
        "{url}"
    );
    let cfg: toml::Value = toml::from_str(&read("deploy/k8s/leadscore.toml")).unwrap();
    assert_eq!(cfg["http"]["listen"].as_str(), Some("0.0.0.0:9464"));
    assert!(
        cfg["http"].get("token").is_none(),
        "a token in the ConfigMap"
    );
}

#[test]
fn dockerfile_copies_only_what_exists() {
    let dockerfile = read("Dockerfile");
    let mut stages = 0;
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            stages += 1;
        }
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = args.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert_exists(&root(), src, "Dockerfile COPY");
        }
    }
    assert!(stages >= 2, "the Dockerfile is multi-stage");
    for needed in ["EXPOSE 9464", "ENTRYPOINT [\"leadscore\"]", "USER "] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
}
