//! `docker-compose.yml` cannot run here (no Docker engine), so it is checked statically: every
//! variable it gives an iotstream service is one the command it runs reads, with a valid value;
//! the database URL matches the PostgreSQL service; every service is health-checked (or a one-shot
//! job waited for), restarted and started in order; ports are published on loopback and agree with
//! the host's defaults; Kafka keeps its data and serves both sides; the image can be had.

use std::collections::BTreeMap;

use clap::{CommandFactory, Parser};
use iotstream::cli::{Cli, Command};
use serde_yaml::Value;

pub(crate) fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("read docker-compose.yml")).expect("valid YAML")
}

/// `text` as compose reads it without `.env` or a shell variable: each `${NAME:-default}` is its
/// default. Any other `$` form would depend on the caller's shell, so it is refused.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let variable = rest[start..].strip_prefix("${").unwrap_or_else(|| panic!("{text:?}: only ${{NAME:-default}}"));
        let end = variable.find('}').unwrap_or_else(|| panic!("{text:?}: unclosed ${{"));
        let (_, default) =
            variable[..end].split_once(":-").unwrap_or_else(|| panic!("{text:?}: a variable without a default"));
        out.push_str(default);
        rest = &variable[end + 1..];
    }
    out + rest
}

fn services(compose: &Value) -> Vec<(String, Value)> {
    let services = compose["services"].as_mapping().expect("services");
    services.iter().map(|(name, s)| (name.as_str().expect("service name").to_owned(), s.clone())).collect()
}

/// The services that run the iotstream image.
fn iotstream_services(compose: &Value) -> Vec<(String, Value)> {
    let runs_image = |s: &Value| s["image"].as_str().is_some_and(|i| i.starts_with("iotstream:"));
    services(compose).into_iter().filter(|(_, s)| runs_image(s)).collect()
}

/// The environment variables subcommand `name` reads (its own and the global ones), with the
/// long flag each one stands for and whether that flag takes a value (false: a switch).
fn known_variables(name: &str) -> BTreeMap<String, (String, bool)> {
    let cli = Cli::command();
    let sub = cli.find_subcommand(name).unwrap_or_else(|| panic!("no subcommand {name}"));
    sub.get_arguments()
        .chain(cli.get_arguments())
        .filter_map(|arg| {
            let flag = (arg.get_long()?.to_owned(), arg.get_action().takes_values());
            Some((arg.get_env()?.to_string_lossy().into_owned(), flag))
        })
        .collect()
}

pub(crate) fn environment(service: &Value) -> Vec<(String, String)> {
    let env = service["environment"].as_mapping().expect("environment is a mapping");
    env.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => interpolate(s),
                Value::Number(n) => n.to_string(),
                other => panic!("unexpected value {other:?}"),
            };
            (k.as_str().expect("string key").to_owned(), value)
        })
        .collect()
}

pub(crate) fn get(vars: &[(String, String)], key: &str) -> String {
    vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{key} is not set"))
}

fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().expect("a list").iter().map(|v| v.as_str().expect("a string").to_owned()).collect()
}

#[test]
fn iotstream_services_set_only_variables_their_command_reads() {
    let compose = compose();
    let mut checked = 0;
    for (name, service) in iotstream_services(&compose) {
        let subcommand = strings(&service["command"])[0].clone();
        let known = known_variables(&subcommand);
        // Each variable becomes the flag it stands for, and the real parser checks every value.
        let mut args = vec!["iotstream".to_owned(), subcommand.clone()];
        for (key, value) in environment(&service) {
            let (flag, takes_value) = known
                .get(&key)
                .unwrap_or_else(|| panic!("service {name:?} sets {key}, which `iotstream {subcommand}` does not read"));
            match (*takes_value, value.as_str()) {
                (true, _) => args.extend([format!("--{flag}"), value]),
                // A switch's variable: "true" sets it, "false" leaves it off; anything else is a
                // value the operator may misread.
                (false, "true") => args.push(format!("--{flag}")),
                (false, "false") => {}
                (false, other) => panic!("service {name:?} sets the switch {key} to {other:?}, not true or false"),
            }
        }
        let parsed = Cli::try_parse_from(&args).map(|_| ());
        assert!(parsed.is_ok(), "service {name:?}: {parsed:?}");
        // Its healthcheck is an iotstream command the parser takes.
        let test = strings(&service["healthcheck"]["test"]);
        assert_eq!(&test[..2], ["CMD", "iotstream"], "service {name:?}");
        let health = Cli::try_parse_from(&test[1..]).map(|cli| matches!(cli.command, Command::Health(_)));
        assert!(matches!(health, Ok(true)), "service {name:?}: healthcheck {test:?}: {:?}", health.err());
        checked += 1;
    }
    assert_eq!(checked, 2, "the iotstream and simulator services");
}

#[test]
fn database_url_and_plugin_folders_match_the_other_services() {
    let compose = compose();
    let postgres = environment(&compose["services"]["postgres"]);
    let iotstream = environment(&compose["services"]["iotstream"]);
    let expected = format!(
        "postgres://{}:{}@postgres:5432/{}",
        get(&postgres, "POSTGRES_USER"),
        get(&postgres, "POSTGRES_PASSWORD"),
        get(&postgres, "POSTGRES_DB")
    );
    assert_eq!(get(&iotstream, "DATABASE_URL"), expected);
    // The seed's parameters, the password's default the one .env.example documents.
    assert_eq!(expected, "postgres://iot_user:iot_password@postgres:5432/iot_db");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../.env.example")).expect(".env.example");
    assert!(example.lines().any(|l| l == "POSTGRES_PASSWORD=iot_password"), "{example}");
    // The drop-in plugins folder is a named volume (it keeps what is dropped in across `down` and
    // `up`, and starts as the image's empty folder, with its owner).
    let plugins = get(&iotstream, "IOTSTREAM_PLUGINS");
    let volumes = strings(&compose["services"]["iotstream"]["volumes"]);
    let mounted = volumes.iter().find(|v| v.split(':').nth(1) == Some(plugins.as_str()));
    let source = mounted.unwrap_or_else(|| panic!("plugins folder {plugins} is not mounted")).split(':').next();
    let source = source.expect("volume source");
    assert!(compose["volumes"].as_mapping().expect("volumes").contains_key(source), "{source} is not a named volume");
    // The built-ins stay the image's: no volume or bind mount lies on them or above them, so an
    // empty drop-in folder hides none, and a rebuilt image brings its own (a copy of the built-ins
    // in a volume would outlive the upgrade). The image test checks they are copied there.
    let builtin = std::path::PathBuf::from(get(&iotstream, "IOTSTREAM_BUILTIN_PLUGINS"));
    assert_ne!(builtin, std::path::Path::new(&plugins), "the built-ins are not the drop-in folder");
    for volume in &volumes {
        let target = volume.split(':').nth(1).unwrap_or_else(|| panic!("{volume}: no target"));
        assert!(!builtin.starts_with(target), "{volume} hides the built-in plugins in {}", builtin.display());
    }
}

/// A service's `depends_on`: each dependency with its condition.
fn dependencies(service: &Value) -> Vec<(String, String)> {
    let Some(depends) = service["depends_on"].as_mapping() else { return Vec::new() };
    depends
        .iter()
        .map(|(name, d)| {
            let condition = d["condition"].as_str().unwrap_or_else(|| panic!("{name:?} without a condition"));
            (name.as_str().expect("name").to_owned(), condition.to_owned())
        })
        .collect()
}

#[test]
fn every_service_is_checked_restarted_and_started_in_order() {
    let compose = compose();
    let all = services(&compose);
    let one_shots: Vec<&str> =
        all.iter().filter(|(_, s)| s["restart"].as_str() == Some("no")).map(|(n, _)| n.as_str()).collect();
    assert_eq!(one_shots, ["kafka-init"]);
    for (name, service) in &all {
        if !one_shots.contains(&name.as_str()) {
            assert!(service["healthcheck"]["test"].as_sequence().is_some(), "{name} has no healthcheck");
            assert_eq!(service["restart"].as_str(), Some("unless-stopped"), "{name}'s restart policy");
        }
        for (dependency, condition) in dependencies(service) {
            let expected = if one_shots.contains(&dependency.as_str()) {
                "service_completed_successfully"
            } else {
                "service_healthy"
            };
            assert_eq!(condition, expected, "{name} on {dependency}");
        }
    }
    // The host starts once the topic exists; the simulator once the host is ready for it.
    let host = dependencies(&compose["services"]["iotstream"]);
    assert!(host.iter().any(|(d, _)| d == "kafka-init") && host.iter().any(|(d, _)| d == "postgres"), "{host:?}");
    assert!(dependencies(&compose["services"]["simulator"]).iter().any(|(d, _)| d == "iotstream"));
}

#[test]
fn ports_are_published_on_loopback_and_match_the_host() {
    let compose = compose();
    for (name, service) in services(&compose) {
        for port in service["ports"].as_sequence().map(|_| strings(&service["ports"])).unwrap_or_default() {
            assert!(port.starts_with("127.0.0.1:"), "{name} publishes {port} on every interface");
        }
    }
    let iotstream = &compose["services"]["iotstream"];
    let listen: std::net::SocketAddr = get(&environment(iotstream), "IOTSTREAM_LISTEN").parse().expect("listen");
    let published = strings(&iotstream["ports"]);
    assert_eq!(published, [format!("127.0.0.1:{0}:{0}", listen.port())]);
    // `iotstream health`'s default probe is the host's default port, the one the container uses.
    let probe = reqwest::Url::parse(iotstream::commands::health::DEFAULT_URL).expect("default url");
    let Command::Run(run) = Cli::try_parse_from(["iotstream", "run"]).expect("run").command else { unreachable!() };
    assert_eq!((probe.port(), probe.path()), (Some(listen.port()), "/readyz"));
    assert_eq!(run.listen.port(), listen.port());
}

#[test]
fn kafka_keeps_its_data_and_serves_both_sides() {
    let compose = compose();
    let kafka = environment(&compose["services"]["kafka"]);
    // A fixed cluster id: a KRaft id is 16 bytes in URL-safe base64, 22 characters.
    let id = get(&kafka, "CLUSTER_ID");
    let base64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    assert!(id.len() == 22 && id.chars().all(base64url), "cluster id {id:?}");
    // The log folder is a named volume.
    let logs = get(&kafka, "KAFKA_LOG_DIRS");
    let volumes = strings(&compose["services"]["kafka"]["volumes"]);
    let source = volumes.iter().find(|v| v.split(':').nth(1) == Some(logs.as_str())).expect("log folder mounted");
    assert!(compose["volumes"].as_mapping().expect("volumes").contains_key(source.split(':').next().expect("source")));
    // The containers reach the advertised internal listener; the machine the published external one.
    let advertised = get(&kafka, "KAFKA_ADVERTISED_LISTENERS");
    let addresses: Vec<&str> = advertised.split(',').filter_map(|l| l.split_once("://").map(|(_, a)| a)).collect();
    for (name, service) in iotstream_services(&compose) {
        let brokers = get(&environment(&service), "IOTSTREAM_BROKERS");
        assert!(addresses.contains(&brokers.as_str()), "{name}: {brokers} is not advertised ({advertised})");
    }
    let external = strings(&compose["services"]["kafka"]["ports"]);
    let port = external[0].rsplit(':').next().expect("port");
    assert!(addresses.contains(&format!("localhost:{port}").as_str()), "{advertised} against {external:?}");
    assert_eq!(get(&kafka, "KAFKA_AUTO_CREATE_TOPICS_ENABLE"), "false");
    // kafka-init creates the host's topic with several partitions.
    let init = strings(&compose["services"]["kafka-init"]["command"]);
    let after = |flag: &str| init.iter().position(|a| a == flag).map(|i| init[i + 1].clone()).expect(flag);
    assert_eq!(after("--topic"), get(&environment(&compose["services"]["iotstream"]), "IOTSTREAM_TOPIC"));
    assert!(after("--partitions").parse::<u32>().expect("partitions") > 1);
    assert!(init.contains(&"--if-not-exists".to_owned()), "a restart must not fail on the existing topic");
}

#[test]
fn every_service_running_the_image_can_build_it() {
    let compose = compose();
    for (name, service) in iotstream_services(&compose) {
        // Compose would otherwise try to pull iotstream:latest from a registry.
        let context = service["build"].as_str().unwrap_or_else(|| panic!("{name} runs the image without build"));
        let dockerfile = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(context).join("Dockerfile");
        assert!(dockerfile.is_file(), "{name}: {}", dockerfile.display());
    }
}
