//! The layers of configuration, through the real binary: a value from the config file, one from
//! the environment and one from a flag land where the precedence says, each reported with its
//! source by `iotstream config`; secrets never reach stdout; an unknown key, a value of the wrong
//! type and an unknown Kafka option stop the command with exit 2 and the key named; the shipped
//! example parses and `iotstream config`'s output is itself a config file giving the same result.

use std::process::{Command, Output};

/// The variables these tests set or that would change their results.
const VARIABLES: [&str; 7] = [
    "IOTSTREAM_CONFIG",
    "IOTSTREAM_BATCH_MAX",
    "IOTSTREAM_TOPIC",
    "IOTSTREAM_GROUP",
    "IOTSTREAM_KAFKA_OPTIONS",
    "DATABASE_URL",
    "IOTSTREAM_ADMIN_TOKEN",
];

/// `iotstream ARGS` with `env` (and none of [`VARIABLES`] from the test's own environment).
fn iotstream(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iotstream"));
    for variable in VARIABLES {
        command.env_remove(variable);
    }
    command.args(args).envs(env.iter().copied()).output().expect("run iotstream")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The line of `key` in `iotstream config`'s output.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|line| line.starts_with(&format!("{key} = ")) || line.starts_with(&format!("\"{key}\" = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{printed}"))
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config file");
    path.to_string_lossy().into_owned()
}

#[test]
fn file_then_environment_then_flags_each_with_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        &dir,
        "iotstream.toml",
        r#"
topic = "from-file"
group = "group-from-file"
batch-max = 100
batch-linger-ms = 7
no-simulator = true
plugin-env-allow = ["TZ", "LANG"]
database-url = "postgres://iot_user:pw-in-file@db:5432/iot_db?sslmode=require"
admin-token = "token-in-file"

[kafka]
"client.id" = "edge-7"
"sasl.password" = "hunter2"
"sasl.username" = "user-from-file"
security.protocol = "SASL_SSL"
"#,
    );
    let output = iotstream(
        &["config", "--config", &file, "--group", "group-from-flag", "--kafka-option", "client.id=edge-8"],
        &[
            ("IOTSTREAM_BATCH_MAX", "200"),
            ("IOTSTREAM_TOPIC", "topic-from-env"),
            ("IOTSTREAM_KAFKA_OPTIONS", "sasl.password=env-secret;socket.timeout.ms=5000"),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    // flag > environment > file > default, each named.
    assert_eq!(line(&printed, "group"), r#"group = "group-from-flag"  # flag"#);
    assert_eq!(line(&printed, "topic"), r#"topic = "topic-from-env"  # env IOTSTREAM_TOPIC"#);
    assert_eq!(line(&printed, "batch-max"), "batch-max = 200  # env IOTSTREAM_BATCH_MAX");
    assert_eq!(line(&printed, "batch-linger-ms"), "batch-linger-ms = 7  # file");
    assert_eq!(line(&printed, "no-simulator"), "no-simulator = true  # file");
    assert_eq!(line(&printed, "plugin-env-allow"), r#"plugin-env-allow = ["TZ", "LANG"]  # file"#);
    assert_eq!(line(&printed, "listen"), r#"listen = "127.0.0.1:8080"  # default"#);
    assert_eq!(line(&printed, "max-age"), r#"max-age = "30days"  # default"#);
    // Secrets masked, the rest of the URL kept.
    assert_eq!(
        line(&printed, "database-url"),
        r#"database-url = "postgres://iot_user:********@db:5432/iot_db?sslmode=require"  # file"#
    );
    assert_eq!(line(&printed, "admin-token"), r#"admin-token = "********"  # file"#);
    // Kafka options merge by key across the layers (a variable does not drop the file's table).
    assert!(printed.contains("[kafka]\n"), "{printed}");
    assert_eq!(line(&printed, "client.id"), r#""client.id" = "edge-8"  # flag"#);
    assert_eq!(line(&printed, "sasl.password"), r#""sasl.password" = "********"  # env"#);
    assert_eq!(line(&printed, "sasl.username"), r#""sasl.username" = "user-from-file"  # file"#);
    assert_eq!(line(&printed, "security.protocol"), r#""security.protocol" = "SASL_SSL"  # file"#);
    assert_eq!(line(&printed, "socket.timeout.ms"), r#""socket.timeout.ms" = "5000"  # env"#);
    for secret in ["pw-in-file", "token-in-file", "hunter2", "env-secret"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    // The file's secret does not leak through `--help` either (it is a default there).
    let help = stdout(&iotstream(&["run", "--config", &file, "--help"], &[]));
    assert!(help.contains("from-file"), "the file's values are the defaults --help shows:\n{help}");
    for secret in ["pw-in-file", "token-in-file", "hunter2"] {
        assert!(!help.contains(secret), "{secret} in --help:\n{help}");
    }
}

#[test]
fn the_file_can_come_from_the_environment_and_the_output_is_a_config_file_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file =
        write(&dir, "a.toml", "batch-max = 123\nmax-age = \"off\"\nrate = 12.5\n[kafka]\n\"client.id\" = \"x\"\n");
    let first = iotstream(&["config"], &[("IOTSTREAM_CONFIG", &file)]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let printed = stdout(&first);
    assert_eq!(line(&printed, "batch-max"), "batch-max = 123  # file");
    assert_eq!(line(&printed, "max-age"), r#"max-age = "off"  # file"#);
    assert_eq!(line(&printed, "rate"), "rate = 12.5  # file");
    // Saved and read back, the printed configuration gives the same values.
    let saved = write(&dir, "saved.toml", &printed);
    let second = iotstream(&["config", "--config", &saved], &[]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(" = "))
            .map(|l| l.split("  #").next().unwrap_or(l).to_owned())
            .collect()
    };
    assert_eq!(values(&stdout(&second)), values(&printed));
    assert!(values(&printed).len() > 25, "{printed}");
}

#[test]
fn unknown_keys_and_wrong_types_are_usage_errors_naming_each_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        &dir,
        "bad.toml",
        "batch_max = 3\nbogus = 1\nbatch-linger-ms = \"lots\"\nno-simulator = \"yes\"\nlisten = [1]\n",
    );
    let output = iotstream(&["run", "--config", &file], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        stderr(&output),
        format!(
            "error: config file {file}:\n  \
             `batch-linger-ms`: invalid value 'lots' for '--batch-linger-ms <BATCH_LINGER_MS>': invalid digit found in string\n  \
             unknown key `batch_max` (keys are the flags' long names: did you mean `batch-max`?)\n  \
             unknown key `bogus` (keys are `iotstream run`'s long flag names; `iotstream run --help` lists them)\n  \
             `listen` takes one value, not an array\n  \
             `no-simulator` must be true or false, not a string\n"
        )
    );
    assert_eq!(stdout(&output), "");
    let syntax = write(&dir, "syntax.toml", "topic = \n");
    let output = iotstream(&["config", "--config", &syntax], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).starts_with(&format!("error: config file {syntax} is not valid TOML: ")), "{output:?}");
    let missing = iotstream(&["config", "--config", "/nonexistent/iotstream.toml"], &[]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(
        stderr(&missing).starts_with("error: cannot read config file /nonexistent/iotstream.toml: "),
        "{missing:?}"
    );
    // A plugin call of no readings would never pass a batch on.
    let zero = iotstream(&["config", "--plugin-readings-per-call", "0"], &[]);
    assert_eq!(zero.status.code(), Some(2), "{zero:?}");
    assert!(
        stderr(&zero).starts_with(
            "error: invalid value '0' for '--plugin-readings-per-call <PLUGIN_READINGS_PER_CALL>': \
             number would be zero for non-zero type"
        ),
        "{zero:?}"
    );
}

#[test]
fn an_unknown_kafka_option_is_refused_at_start_by_name() {
    // From a flag, before anything connects or opens (the database URL points nowhere).
    let output = iotstream(
        &[
            "run",
            "--kafka-option",
            "client.id=x",
            "--kafka-option",
            "sasl.pasword=x",
            "--database-url",
            "postgres://nowhere:1/x",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        stderr(&output),
        "error: kafka option `sasl.pasword`: No such configuration property: \"sasl.pasword\"\n"
    );
    // From the environment, `;`-separated, and for `simulate` too.
    let output = iotstream(&["simulate"], &[("IOTSTREAM_KAFKA_OPTIONS", "client.id=x;fetch.wait.max.mss=5")]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).starts_with("error: kafka option `fetch.wait.max.mss`: "), "{output:?}");
    // A property the host sets from its own flag.
    let output = iotstream(&["run", "--kafka-option", "bootstrap.servers=elsewhere:9092"], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("kafka option `bootstrap.servers` is set by --brokers"), "{output:?}");
}

#[test]
fn the_shipped_example_parses() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../iotstream.example.toml");
    let output = iotstream(&["config", "--config", example], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    assert_eq!(line(&printed, "brokers"), r#"brokers = "localhost:29092"  # file"#);
    assert_eq!(line(&printed, "client.id"), r#""client.id" = "iotstream"  # file"#);
    // Every key of the example is a setting the file layer took (none ignored).
    let table: toml::Table = std::fs::read_to_string(example).expect("read").parse().expect("TOML");
    for key in table.keys().filter(|key| *key != "kafka") {
        assert!(line(&printed, key).ends_with("  # file"), "{key}: {}", line(&printed, key));
    }
}

#[test]
fn exit_codes_are_documented_in_help() {
    let output = iotstream(&["--help"], &[]);
    assert_eq!(output.status.code(), Some(0));
    let help = stdout(&output);
    let codes = help.split("Exit codes:\n").nth(1).expect("an Exit codes section");
    let listed: Vec<&str> = codes.lines().map(|l| l.split_whitespace().next().unwrap_or_default()).collect();
    assert_eq!(listed, ["0", "1", "2", "3", "130"], "{help}");
    // A usage error is clap's 2.
    assert_eq!(iotstream(&["run", "--batch-max", "many"], &[]).status.code(), Some(2));
}
