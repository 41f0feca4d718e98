//! The configuration file and the layers of configuration: built-in defaults < the TOML file
//! (`--config FILE` or `IOTSTREAM_CONFIG`) < `IOTSTREAM_*` environment variables < flags.
//!
//! There is one definition of each setting: its clap argument ([`crate::config::RunConfig`]). The
//! file is read before the command line is parsed, every key is checked against the arguments clap
//! knows (by their long name: `batch-max`, `database-url`), its value is checked by the argument's
//! own parser, and then it becomes the argument's default. Clap already ranks an environment
//! variable above a default and a flag above both, so the layers need no code of their own, and
//! the parsed configuration is the same [`RunConfig`](crate::config::RunConfig) a flag builds.
//!
//! The file configures `iotstream run` and the commands that take `run`'s settings (`bench`,
//! `config`); its `[kafka]` table holds librdkafka options (`--kafka-option`). `iotstream config`
//! prints the effective configuration as such a file, each value with its source, secrets masked.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::kafka::{Brokers, KafkaOption, KafkaOptionError};

/// The variable naming the config file when `--config` does not.
pub const CONFIG_ENV: &str = "IOTSTREAM_CONFIG";
/// The commands the file configures: `run`, and those that take `run`'s settings.
const CONFIGURED_COMMANDS: [&str; 3] = ["run", "bench", "config"];
/// The file's table of librdkafka options, and the flag it stands for.
const KAFKA_TABLE: &str = "kafka";
const KAFKA_OPTION_FLAG: &str = "kafka-option";
/// Arguments that are not settings.
const NOT_SETTINGS: [&str; 3] = ["help", "version", "config"];
/// What a masked secret shows.
const MASK: &str = "********";

/// Why the configuration could not be formed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where and why, as the TOML parser says it.
        message: String,
    },
    /// Keys the host does not know, or values of the wrong type: every one of them, at once.
    #[error("config file {}:\n  {}", path.display(), problems.join("\n  "))]
    Keys {
        /// The file.
        path: PathBuf,
        /// One line per bad key, naming it.
        problems: Vec<String>,
    },
    /// A Kafka option librdkafka refuses.
    #[error(transparent)]
    KafkaOption(#[from] KafkaOptionError),
}

/// Why the command line could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Clap's own: a usage error, or `--help`/`--version` (which clap prints and exits 0 for).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The config file or a Kafka option.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Parses `args` (the program's name first) over the config file they or `IOTSTREAM_CONFIG` name.
pub fn parse_from<I, T>(args: I) -> Result<Cli, ParseError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Cli::command().after_long_help(crate::cli::ExitStatus::help());
    let file = match config_path(&args) {
        Some(path) => Some(ConfigFile::load(&path)?),
        None => None,
    };
    if let Some(file) = &file {
        command = file.apply(command)?;
    }
    let matches = command.try_get_matches_from_mut(&args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let Some((name, sub_matches)) = matches.subcommand() else { return Ok(cli) };
    let sub = command.find_subcommand(name).expect("the matched subcommand");
    let mut kafka = Vec::new();
    if let Some(options) = cli.command.kafka_options_mut() {
        kafka = layered_kafka_options(sub, sub_matches, file.as_ref(), std::mem::take(options))?;
        Brokers::validate(&kafka.iter().map(|(option, _)| option.clone()).collect::<Vec<_>>())
            .map_err(ConfigError::from)?;
        *options = kafka.iter().map(|(option, _)| option.clone()).collect();
    }
    if let Command::Config(show) = &mut cli.command {
        show.rendered = render(sub, sub_matches, file.as_ref(), &kafka);
    }
    Ok(cli)
}

/// The Kafka options of every layer, merged by key, each with the layer it came from: the file's,
/// then the environment's, then the flags'. A later layer's value for a key wins and the other
/// keys stay, as with any other setting; clap alone would let `IOTSTREAM_KAFKA_OPTIONS` (say, a
/// password kept out of the file) replace the file's whole `[kafka]` table. `parsed` are the
/// options clap parsed, from the highest layer that had any.
fn layered_kafka_options(
    command: &clap::Command,
    matches: &ArgMatches,
    file: Option<&ConfigFile>,
    parsed: Vec<KafkaOption>,
) -> Result<Vec<(KafkaOption, &'static str)>, ConfigError> {
    let Some(arg) = command.get_arguments().find(|arg| arg.get_long() == Some(KAFKA_OPTION_FLAG)) else {
        return Ok(Vec::new());
    };
    let of_file = || -> Vec<KafkaOption> {
        let table = file.and_then(|file| file.table.get(KAFKA_TABLE));
        let options = table.and_then(|table| kafka_table(table).ok()).unwrap_or_default();
        options.iter().filter_map(|text| text.parse().ok()).collect()
    };
    let of_environment = || -> Result<Vec<KafkaOption>, KafkaOptionError> {
        let text = arg.get_env().and_then(std::env::var_os).unwrap_or_default();
        let text = text.to_string_lossy();
        text.split(';').filter(|part| !part.is_empty()).map(str::parse).collect()
    };
    let layers: Vec<(Vec<KafkaOption>, &'static str)> = match matches.value_source(arg.get_id().as_str()) {
        Some(ValueSource::CommandLine) => vec![(of_file(), "file"), (of_environment()?, "env"), (parsed, "flag")],
        Some(ValueSource::EnvVariable) => vec![(of_file(), "file"), (parsed, "env")],
        _ => vec![(parsed, "file")],
    };
    let mut merged: Vec<(KafkaOption, &'static str)> = Vec::new();
    for (options, layer) in layers {
        for option in options {
            match merged.iter_mut().find(|(held, _)| held.key == option.key) {
                Some(held) => *held = (option, layer),
                None => merged.push((option, layer)),
            }
        }
    }
    Ok(merged)
}

/// The config file of a command the file configures: the one `--config FILE` (or
/// `--config=FILE`) names, before any `--`, or else `IOTSTREAM_CONFIG`. Read before clap parses,
/// since the file supplies clap's defaults; clap parses `--config` again (`RunConfig`), so it is in
/// `--help` and a missing value is a usage error. Other commands have a `--config` of their own
/// (a plugin's configuration) or none.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let root = Cli::command();
    let root_takes_value = |word: &str| {
        root.get_arguments().any(|arg| {
            arg.get_action().takes_values() && arg.get_long().is_some_and(|long| word == format!("--{long}"))
        })
    };
    let mut words = args.iter().skip(1).map(|word| word.to_string_lossy());
    // The subcommand: the first word that is not a global option or its value.
    let command = loop {
        let word = words.next()?;
        if root_takes_value(&word) {
            words.next();
        } else if !word.starts_with('-') {
            break word;
        }
    };
    if !CONFIGURED_COMMANDS.contains(&command.as_ref()) {
        return None;
    }
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if word == "--config" {
            return words.next().map(|path| PathBuf::from(path.as_ref()));
        }
        if let Some(path) = word.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV).filter(|path| !path.is_empty()).map(PathBuf::from)
}

/// A config file, read and parsed.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

/// One setting from the file: the argument it sets and its values as clap reads them.
struct Setting {
    id: String,
    on_root: bool,
    values: Vec<String>,
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let table = text
            .parse::<toml::Table>()
            .map_err(|err| ConfigError::Syntax { path: path.to_owned(), message: err.to_string().trim().to_owned() })?;
        Ok(ConfigFile { path: path.to_owned(), table })
    }

    /// The file's keys.
    fn keys(&self) -> BTreeSet<&str> {
        self.table.keys().map(String::as_str).collect()
    }

    /// `command` with every setting of the file as its argument's default; every unknown key and
    /// every value of the wrong type is an error, all of them reported together.
    fn apply(&self, mut command: clap::Command) -> Result<clap::Command, ConfigError> {
        let run = command.find_subcommand("run").expect("run is a subcommand").clone();
        let mut settings = Vec::new();
        let mut problems = Vec::new();
        for (key, value) in &self.table {
            match self.setting(&command, &run, key, value) {
                Ok(setting) => settings.push(setting),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Keys { path: self.path.clone(), problems });
        }
        for Setting { id, on_root, values } in settings {
            let set_default = |arg: Arg| {
                // A secret from the file must not show up in `--help` as a default.
                let secret = arg.is_hide_env_values_set();
                arg.default_values(values.clone()).hide_default_value(secret)
            };
            if on_root {
                command = command.mut_arg(&id, set_default);
            } else {
                for name in CONFIGURED_COMMANDS {
                    command = command.mut_subcommand(name, |sub| {
                        if sub.get_arguments().any(|arg| arg.get_id() == id.as_str()) {
                            sub.mut_arg(&id, set_default)
                        } else {
                            sub
                        }
                    });
                }
            }
        }
        Ok(command)
    }

    /// The argument `key` sets and its values; or the problem, naming the key.
    fn setting(
        &self,
        root: &clap::Command,
        run: &clap::Command,
        key: &str,
        value: &toml::Value,
    ) -> Result<Setting, String> {
        if key == KAFKA_TABLE {
            let arg = run.get_arguments().find(|arg| arg.get_long() == Some(KAFKA_OPTION_FLAG));
            let arg = arg.expect("run takes --kafka-option");
            return kafka_table(value).map(|values| Setting { id: arg.get_id().to_string(), on_root: false, values });
        }
        let by_name = |arg: &&Arg| arg.get_long() == Some(key) && !NOT_SETTINGS.contains(&key);
        let (arg, on_root) = match root.get_arguments().find(by_name) {
            Some(arg) => (arg, true),
            None => match run.get_arguments().find(by_name) {
                Some(arg) if key != KAFKA_OPTION_FLAG => (arg, false),
                Some(_) => return Err(format!("`{key}`: Kafka options go in the [{KAFKA_TABLE}] table")),
                None => return Err(unknown_key(run, key)),
            },
        };
        let values = values_of(arg, key, value)?;
        if !matches!(arg.get_action(), ArgAction::SetTrue) {
            // The argument's own parser judges the value, as it would a flag's.
            let probe = clap::Command::new("iotstream").no_binary_name(true).arg(arg.clone().global(false));
            probe.try_get_matches_from(values.iter().map(|v| format!("--{key}={v}"))).map_err(|err| {
                let rendered = err.render().to_string();
                let first = rendered.lines().next().unwrap_or_default();
                format!("`{key}`: {}", first.trim_start_matches("error: "))
            })?;
        }
        Ok(Setting { id: arg.get_id().to_string(), on_root, values })
    }
}

/// The problem with `key`, which no argument has: with the kebab-case spelling when the key is
/// a snake_case one.
fn unknown_key(run: &clap::Command, key: &str) -> String {
    let kebab = key.replace('_', "-");
    if kebab != key && run.get_arguments().any(|arg| arg.get_long() == Some(kebab.as_str())) {
        format!("unknown key `{key}` (keys are the flags' long names: did you mean `{kebab}`?)")
    } else {
        format!("unknown key `{key}` (keys are `iotstream run`'s long flag names; `iotstream run --help` lists them)")
    }
}

/// The values of `key` for `arg`, as the text clap parses; or the problem, naming the key.
fn values_of(arg: &Arg, key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let many = matches!(arg.get_action(), ArgAction::Append);
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(on)) => Ok(vec![on.to_string()]),
        (ArgAction::SetTrue, other) => Err(format!("`{key}` must be true or false, not {}", type_name(other))),
        (_, toml::Value::Array(items)) if many => items
            .iter()
            .map(|item| scalar_text(item).ok_or_else(|| format!("`{key}` holds {}, not text", type_name(item))))
            .collect(),
        (_, value) => match scalar_text(value) {
            Some(text) => Ok(vec![text]),
            None => Err(format!("`{key}` takes one value, not {}", type_name(value))),
        },
    }
}

/// The text of a string, number or boolean.
fn scalar_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Float(number) => Some(number.to_string()),
        toml::Value::Boolean(on) => Some(on.to_string()),
        _ => None,
    }
}

/// What kind of TOML value this is, for an error.
fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// The `[kafka]` table as `KEY=VALUE` options. Dotted keys written bare (`security.protocol =
/// "SSL"`) are nested tables to TOML: they are joined back into librdkafka's property names.
fn kafka_table(value: &toml::Value) -> Result<Vec<String>, String> {
    fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<String>) -> Result<(), String> {
        for (key, value) in table {
            let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match value {
                toml::Value::Table(inner) => flatten(&name, inner, out)?,
                value => {
                    let text = scalar_text(value)
                        .ok_or_else(|| format!("`{KAFKA_TABLE}.{name}` holds {}, not a value", type_name(value)))?;
                    let option = format!("{name}={text}");
                    option.parse::<KafkaOption>().map_err(|err| format!("[{KAFKA_TABLE}]: {err}"))?;
                    out.push(option);
                }
            }
        }
        Ok(())
    }
    let toml::Value::Table(table) = value else {
        return Err(format!("`{KAFKA_TABLE}` must be a table of librdkafka options, not {}", type_name(value)));
    };
    let mut options = Vec::new();
    flatten("", table, &mut options)?;
    Ok(options)
}

/// The effective configuration of `config` (the `iotstream config` subcommand, built, which takes
/// `run`'s settings) as parsed into `matches`: a TOML file, by section, each value with its source,
/// secrets masked.
fn render(
    config: &clap::Command,
    matches: &ArgMatches,
    file: Option<&ConfigFile>,
    kafka_options: &[(KafkaOption, &str)],
) -> String {
    let from_file = file.map(ConfigFile::keys).unwrap_or_default();
    let source = |arg: &Arg, key: &str| match matches.value_source(arg.get_id().as_str()) {
        Some(ValueSource::CommandLine) => "flag".to_owned(),
        Some(ValueSource::EnvVariable) => format!("env {}", env_name(arg)),
        // An empty list from the file is no value to clap: still the file's.
        Some(ValueSource::DefaultValue) | None if from_file.contains(key) => "file".to_owned(),
        _ => "default".to_owned(),
    };
    let mut out = String::from(
        "# iotstream configuration: defaults < config file < IOTSTREAM_* environment < flags.\n\
         # Each value's source is on its right; secrets are masked.\n",
    );
    if let Some(file) = file {
        out += &format!("# Config file: {}\n", file.path.display());
    }
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let mut kafka = String::new();
    // In declaration order (setting a default from the file moves an argument to the end of the
    // command's list; its display order stays).
    let mut args: Vec<&Arg> = config.get_arguments().collect();
    args.sort_by_key(|arg| arg.get_display_order());
    for arg in args {
        let Some(key) = arg.get_long() else { continue };
        if NOT_SETTINGS.contains(&key) || arg.is_hide_set() {
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(arg.get_id().as_str())
            .map(|raw| raw.map(|value| value.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if key == KAFKA_OPTION_FLAG {
            kafka = format!("\n# librdkafka options: file < env {} < flags, by key\n[{KAFKA_TABLE}]\n", env_name(arg));
            for (option, layer) in kafka_options {
                let shown = if option.is_secret() { MASK.to_owned() } else { option.value.clone() };
                kafka += &format!("{} = {}  # {layer}\n", toml_string(&option.key), toml_string(&shown));
            }
            continue;
        }
        let line = match (arg.get_action(), values.as_slice()) {
            (ArgAction::Append, values) => {
                let items: Vec<String> = values.iter().map(|value| toml_string(value)).collect();
                format!("{key} = [{}]  # {}", items.join(", "), source(arg, key))
            }
            (_, []) => format!("# {key} = (not set)  # {}", source(arg, key)),
            (_, [value, ..]) => {
                let shown = if arg.is_hide_env_values_set() { mask(value) } else { value.clone() };
                format!("{key} = {}  # {}", toml_value(arg, &shown), source(arg, key))
            }
        };
        let heading = arg.get_help_heading().unwrap_or("General").to_owned();
        match sections.iter_mut().find(|(name, _)| *name == heading) {
            Some((_, lines)) => lines.push(line),
            None => sections.push((heading, vec![line])),
        }
    }
    for (heading, lines) in sections {
        out += &format!("\n# {heading}\n{}\n", lines.join("\n"));
    }
    out + &kafka
}

/// The variable of `arg` (empty when it has none).
fn env_name(arg: &Arg) -> String {
    arg.get_env().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `value` as a TOML value: a boolean for a flag, a number when the argument parses numbers and
/// the text is one, else a string.
fn toml_value(arg: &Arg, value: &str) -> String {
    let parses_text = [clap::builder::ValueParser::string(), clap::builder::ValueParser::path_buf()]
        .iter()
        .any(|parser| parser.type_id() == arg.get_value_parser().type_id());
    let numeric = !parses_text
        && value.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-')
        && (value.parse::<i64>().is_ok() || value.parse::<f64>().is_ok_and(f64::is_finite));
    match arg.get_action() {
        ArgAction::SetTrue => value.to_owned(),
        _ if numeric => value.to_owned(),
        _ => toml_string(value),
    }
}

/// `text` as a TOML string literal (quoted, escaped).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A secret for display: a URL's password (in its user info or a `password=` query parameter)
/// masked and the rest kept, so an operator still sees where it points; anything else masked whole.
fn mask(value: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(value) else { return MASK.to_owned() };
    if !url.has_host() {
        return MASK.to_owned();
    }
    if url.password().is_some() {
        let _ = url.set_password(Some(MASK));
    }
    if url.query_pairs().any(|(name, _)| name == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if name == "password" { MASK.to_owned() } else { value.into_owned() };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_everything_but_its_password() {
        assert_eq!(
            mask("postgres://iot_user:s3cret@db:5432/iot_db?sslmode=require"),
            "postgres://iot_user:********@db:5432/iot_db?sslmode=require"
        );
        assert_eq!(mask("postgres://postgres@127.0.0.1:5432/test"), "postgres://postgres@127.0.0.1:5432/test");
        assert_eq!(
            mask("postgres://u@h/db?password=pw&sslmode=require"),
            "postgres://u@h/db?password=********&sslmode=require"
        );
        assert_eq!(mask("a-bearer-token"), MASK);
    }

    #[test]
    fn the_config_path_comes_from_the_flag_before_a_double_dash() {
        let args = |words: &[&str]| words.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(config_path(&args(&["iotstream", "run", "--config", "a.toml"])), Some("a.toml".into()));
        assert_eq!(
            config_path(&args(&["iotstream", "--log", "debug", "config", "--config=b.toml"])),
            Some("b.toml".into())
        );
        assert_eq!(config_path(&args(&["iotstream", "bench", "--", "--config", "c.toml"])), None);
        // `replay --config` is a plugin's configuration, not a config file.
        assert_eq!(config_path(&args(&["iotstream", "replay", "--config", "{\"window\": 3}"])), None);
    }

    #[test]
    fn the_kafka_table_takes_quoted_and_bare_dotted_keys() {
        let table: toml::Table =
            "[kafka]\n\"sasl.mechanism\" = \"SCRAM-SHA-256\"\nsecurity.protocol = \"SASL_SSL\"\n\"socket.timeout.ms\" = 5000"
                .parse()
                .expect("toml");
        assert_eq!(
            kafka_table(&table["kafka"]),
            Ok(vec![
                "sasl.mechanism=SCRAM-SHA-256".to_owned(),
                "security.protocol=SASL_SSL".to_owned(),
                "socket.timeout.ms=5000".to_owned(),
            ])
        );
        let reserved: toml::Table = "[kafka]\n\"group.id\" = \"x\"".parse().expect("toml");
        assert_eq!(
            kafka_table(&reserved["kafka"]),
            Err("[kafka]: kafka option `group.id` is set by --group, not as an option".to_owned())
        );
    }
}
