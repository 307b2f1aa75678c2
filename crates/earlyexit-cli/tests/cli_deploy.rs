//! The container and Kubernetes files (`Dockerfile`, `deploy/`) hold together with the binary:
//! every manifest parses as YAML, every flag they pass to `earlyexit` is one it takes, and the
//! ports they listen on, declare, probe, scrape and route to agree.

use std::collections::{BTreeMap, BTreeSet};

use yaml_rust2::{Yaml, YamlLoader};

mod common;
use common::{earlyexit_text, repo_root};

/// Every YAML document under `deploy/`, with the file it came from.
fn manifests() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    let mut dirs = vec![repo_root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&p).unwrap();
                let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                let name = p.strip_prefix(repo_root()).unwrap_or(&p).display().to_string();
                out.extend(docs.into_iter().map(|d| (name.clone(), d)));
            }
        }
    }
    out
}

/// The long flags `earlyexit SUB --help` lists (aliases included).
fn flags_of(sub: &str) -> BTreeSet<String> {
    let (ok, help) = earlyexit_text(&[sub, "--help"]);
    assert!(ok, "{help}");
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=' || c == ':')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(['.', ')']).to_string())
        .collect()
}

/// Checks `args` (`SUB --flag value …`) against what `earlyexit SUB` takes; the ports of
/// `--listen` and `--http-listen`.
fn check_args(what: &str, args: &[String]) -> (u16, Option<u16>) {
    let sub = &args[0];
    let known = flags_of(sub);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap();
        assert!(
            known.contains(flag),
            "{what}: `earlyexit {sub}` has no {flag} (it has {known:?})"
        );
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].rsplit(':').next().unwrap().parse::<u16>().unwrap())
    };
    (value("--listen").expect("--listen is given"), value("--http-listen"))
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .map(String::from)
                .unwrap_or_else(|| a.as_i64().unwrap().to_string())
        })
        .collect()
}

/// A probe's port (`grpc.port`, `httpGet.port`), as a number or the name of a container port.
fn probe_port(probe: &Yaml, named: &BTreeMap<String, u16>) -> u16 {
    let p = if !probe["grpc"].is_badvalue() {
        &probe["grpc"]["port"]
    } else {
        &probe["httpGet"]["port"]
    };
    p.as_i64()
        .map(|n| n as u16)
        .unwrap_or_else(|| named[p.as_str().unwrap()])
}

#[test]
fn manifests_parse_and_agree_with_the_binary_and_each_other() {
    let docs = manifests();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|(_, d)| d["kind"].as_str()).collect();
    for k in ["Deployment", "Service", "ServingRuntime", "InferenceService"] {
        assert!(kinds.contains(k), "no {k} under deploy/ (found {kinds:?})");
    }
    let mut container_ports = BTreeMap::new();
    let mut runtimes = BTreeMap::new();
    for (file, d) in &docs {
        let kind = d["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: a document without a kind"));
        let (containers, pod_annotations) = match kind {
            "Deployment" => (
                &d["spec"]["template"]["spec"]["containers"],
                &d["spec"]["template"]["metadata"]["annotations"],
            ),
            "ServingRuntime" => (&d["spec"]["containers"], &d["metadata"]["annotations"]),
            _ => continue,
        };
        for c in containers.as_vec().unwrap() {
            let what = format!("{file}: {kind} container {}", c["name"].as_str().unwrap());
            let args = strings(&c["args"]);
            let (grpc, http) = check_args(&what, &args);
            let http = http.unwrap_or_else(|| panic!("{what}: no --http-listen (REST and /metrics)"));
            let mut named = BTreeMap::new();
            let mut declared = BTreeSet::new();
            for p in c["ports"].as_vec().unwrap() {
                let port = p["containerPort"].as_i64().unwrap() as u16;
                declared.insert(port);
                if let Some(n) = p["name"].as_str() {
                    named.insert(n.to_string(), port);
                }
            }
            assert!(
                declared.contains(&http),
                "{what}: the HTTP port {http} is not declared ({declared:?})"
            );
            assert!(
                !c["resources"]["requests"]["cpu"].is_badvalue(),
                "{what}: no CPU request"
            );
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                if c[probe].is_badvalue() {
                    continue;
                }
                let port = probe_port(&c[probe], &named);
                assert!(
                    [grpc, http].contains(&port),
                    "{what}: {probe} asks port {port}, the server listens on {grpc} and {http}"
                );
                if !c[probe]["grpc"].is_badvalue() {
                    assert_eq!(port, grpc, "{what}: {probe} is a gRPC probe on a port without gRPC");
                }
            }
            assert!(!c["readinessProbe"].is_badvalue(), "{what}: no readiness probe");
            let scraped = ["prometheus.io/port", "prometheus.kserve.io/port"]
                .iter()
                .find_map(|k| pod_annotations[*k].as_str())
                .unwrap_or_else(|| panic!("{what}: the metrics port is not annotated"));
            assert_eq!(
                scraped.parse::<u16>().unwrap(),
                http,
                "{what}: /metrics is on the HTTP port"
            );
            if kind == "Deployment" {
                container_ports.extend(named);
            }
        }
        if kind == "ServingRuntime" {
            let formats: Vec<&str> = d["spec"]["supportedModelFormats"]
                .as_vec()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap())
                .collect();
            let protocols = strings(&d["spec"]["protocolVersions"]);
            assert!(protocols.contains(&"v2".to_string()), "{file}: {protocols:?}");
            runtimes.insert(d["metadata"]["name"].as_str().unwrap().to_string(), formats);
        }
    }
    for (file, d) in &docs {
        match d["kind"].as_str().unwrap() {
            "Service" => {
                for p in d["spec"]["ports"].as_vec().unwrap() {
                    let target = &p["targetPort"];
                    let ok = match target.as_str() {
                        Some(name) => container_ports.contains_key(name),
                        None => container_ports
                            .values()
                            .any(|&v| i64::from(v) == target.as_i64().unwrap()),
                    };
                    assert!(ok, "{file}: Service port {:?} targets no container port", p["name"]);
                }
            }
            "InferenceService" => {
                let model = &d["spec"]["predictor"]["model"];
                let runtime = model["runtime"].as_str().unwrap();
                let formats = runtimes
                    .get(runtime)
                    .unwrap_or_else(|| panic!("{file}: runtime {runtime} is not under deploy/"));
                let format = model["modelFormat"]["name"].as_str().unwrap();
                assert!(
                    formats.contains(&format),
                    "{file}: {format} is not a format of {runtime}"
                );
            }
            _ => {}
        }
    }
}

/// The Dockerfile's default command is one `earlyexit serve` takes, on the ports it exposes.
#[test]
fn the_dockerfile_runs_flags_the_binary_has_on_the_ports_it_exposes() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let cmd = text.lines().find(|l| l.starts_with("CMD ")).expect("a CMD line");
    let args: Vec<String> = serde_json::from_str(&cmd["CMD ".len()..]).unwrap();
    let (grpc, http) = check_args("Dockerfile CMD", &args);
    let exposed: BTreeSet<u16> = text
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    assert_eq!(exposed, BTreeSet::from([grpc, http.expect("--http-listen in CMD")]));
    // `cargo build --locked` in the build stage needs the committed lock file.
    assert!(repo_root().join("Cargo.lock").exists(), "--locked needs Cargo.lock");
}
