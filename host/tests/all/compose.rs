//! `docker-compose.yml` cannot run here (no Docker engine), so it is checked statically: every
//! variable it gives an iotstream service is one the command it runs reads, with a valid value, and
//! the database URL matches the PostgreSQL service.

use std::collections::BTreeMap;

use clap::{CommandFactory, Parser};
use iotstream::cli::Cli;
use serde_yaml::Value;

fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("read docker-compose.yml")).expect("valid YAML")
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

fn environment(service: &Value) -> Vec<(String, String)> {
    let env = service["environment"].as_mapping().expect("environment is a mapping");
    env.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("unexpected value {other:?}"),
            };
            (k.as_str().expect("string key").to_owned(), value)
        })
        .collect()
}

#[test]
fn iotstream_services_set_only_variables_their_command_reads() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let mut checked = 0;
    for (name, service) in services {
        let Some(command) = service["command"].as_sequence() else { continue };
        let subcommand = command[0].as_str().expect("command name");
        let known = known_variables(subcommand);
        // Each variable becomes the flag it stands for, and the real parser checks every value.
        let mut args = vec!["iotstream".to_owned(), subcommand.to_owned()];
        for (key, value) in environment(service) {
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
        checked += 1;
    }
    assert_eq!(checked, 2, "the iotstream and simulator services");
}

#[test]
fn database_url_and_plugin_folder_match_the_other_services() {
    let compose = compose();
    let postgres = environment(&compose["services"]["postgres"]);
    let get = |vars: &[(String, String)], key: &str| {
        vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    let iotstream = environment(&compose["services"]["iotstream"]);
    let expected = format!(
        "postgres://{}:{}@postgres:5432/{}",
        get(&postgres, "POSTGRES_USER"),
        get(&postgres, "POSTGRES_PASSWORD"),
        get(&postgres, "POSTGRES_DB")
    );
    assert_eq!(get(&iotstream, "DATABASE_URL"), expected);
    let volumes = compose["services"]["iotstream"]["volumes"].as_sequence().expect("volumes");
    let plugins = get(&iotstream, "IOTSTREAM_PLUGINS");
    assert!(
        volumes.iter().any(|v| v.as_str().is_some_and(|v| v.split(':').nth(1) == Some(plugins.as_str()))),
        "plugins folder {plugins} is not mounted"
    );
}
