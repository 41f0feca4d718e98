//! Where the brokers are and how to talk to them: [`Brokers`] configures every librdkafka client
//! the host makes (the pipeline's consumer, the simulator's producer, `iotstream health`'s metadata
//! client), so a TLS or SASL setting given once (`--kafka-option`, the config file's `[kafka]`
//! table) reaches all of them.
//!
//! The options are librdkafka's own properties, passed through unchanged and set after the host's
//! tuning, so an operator's value wins. Two are refused because the host has a flag for them
//! (`bootstrap.servers` is `--brokers`, `group.id` is `--group`): two places for one setting would
//! disagree silently. [`Brokers::validate`] asks librdkafka itself about every key, so a typo is
//! an error naming the key when the command starts, not a client that fails later.

use std::fmt;
use std::str::FromStr;

use rdkafka::ClientConfig;

/// Properties the host sets from its own flags; an option may not set them.
const RESERVED: [(&str, &str); 2] = [("bootstrap.servers", "--brokers"), ("group.id", "--group")];

/// One librdkafka property, `KEY=VALUE` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOption {
    /// The property's name (`security.protocol`, `sasl.mechanism`, ...).
    pub key: String,
    /// Its value.
    pub value: String,
}

/// Why a Kafka option is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaOptionError {
    /// Not `KEY=VALUE`.
    #[error("kafka option `{0}` is not KEY=VALUE")]
    NotKeyValue(String),
    /// A property the host sets from a flag.
    #[error("kafka option `{key}` is set by {flag}, not as an option")]
    Reserved {
        /// The property.
        key: String,
        /// The flag that sets it.
        flag: &'static str,
    },
    /// librdkafka does not know the property, or refuses its value.
    #[error("kafka option `{key}`: {reason}")]
    Refused {
        /// The property.
        key: String,
        /// What librdkafka said.
        reason: String,
    },
}

impl FromStr for KafkaOption {
    type Err = KafkaOptionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                let key = key.trim().to_owned();
                match RESERVED.iter().find(|(reserved, _)| *reserved == key) {
                    Some(&(_, flag)) => Err(KafkaOptionError::Reserved { key, flag }),
                    None => Ok(KafkaOption { key, value: value.to_owned() }),
                }
            }
            _ => Err(KafkaOptionError::NotKeyValue(text.to_owned())),
        }
    }
}

impl fmt::Display for KafkaOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl KafkaOption {
    /// Whether the value is a secret (`sasl.password`, `ssl.key.password`, `ssl.key.pem`...): the
    /// key names a password, a secret or a key. `iotstream config` masks these.
    pub fn is_secret(&self) -> bool {
        ["password", "secret", "key"].iter().any(|word| self.key.contains(word))
    }
}

/// The brokers and the options every client made for them gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Brokers {
    /// The bootstrap servers, `HOST:PORT[,HOST:PORT...]`.
    pub servers: String,
    /// librdkafka properties set on every client, after the host's own.
    pub options: Vec<KafkaOption>,
}

impl Brokers {
    /// `servers`, with no options.
    pub fn new(servers: impl Into<String>) -> Self {
        Brokers { servers: servers.into(), options: Vec::new() }
    }

    /// `servers` with `options`.
    pub fn with_options(servers: impl Into<String>, options: &[KafkaOption]) -> Self {
        Brokers { servers: servers.into(), options: options.to_vec() }
    }

    /// `tuning` (the client's own properties), then the bootstrap servers and the options: the
    /// configuration to create a client from.
    pub fn client_config(&self, tuning: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in tuning {
            config.set(*key, *value);
        }
        config.set("bootstrap.servers", &self.servers);
        for option in &self.options {
            config.set(&option.key, &option.value);
        }
        config
    }

    /// Asks librdkafka whether it knows every option and takes its value (no client is created,
    /// nothing connects). The first refused option, named.
    pub fn validate(options: &[KafkaOption]) -> Result<(), KafkaOptionError> {
        for option in options {
            let mut config = ClientConfig::new();
            config.set(&option.key, &option.value);
            if let Err(err) = config.create_native_config() {
                let reason = match err {
                    rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description,
                    other => other.to_string(),
                };
                return Err(KafkaOptionError::Refused { key: option.key.clone(), reason });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(text: &str) -> KafkaOption {
        text.parse().expect("KEY=VALUE")
    }

    #[test]
    fn options_parse_as_key_and_value_and_the_value_may_hold_equals_signs() {
        assert_eq!(option("client.id=edge-7"), KafkaOption { key: "client.id".into(), value: "edge-7".into() });
        assert_eq!(option("sasl.password=a=b").value, "a=b");
        assert_eq!("noequals".parse::<KafkaOption>(), Err(KafkaOptionError::NotKeyValue("noequals".into())));
        assert_eq!(
            "group.id=x".parse::<KafkaOption>().map_err(|e| e.to_string()),
            Err("kafka option `group.id` is set by --group, not as an option".into())
        );
    }

    #[test]
    fn librdkafka_refuses_an_unknown_key_by_name_and_takes_a_known_one() {
        let err = Brokers::validate(&[option("client.id=x"), option("sasl.pasword=hunter2")]).expect_err("typo");
        assert_eq!(
            err,
            KafkaOptionError::Refused {
                key: "sasl.pasword".into(),
                reason: "No such configuration property: \"sasl.pasword\"".into()
            }
        );
        assert!(
            Brokers::validate(&[option("security.protocol=sasl_ssl"), option("sasl.mechanism=SCRAM-SHA-512")]).is_ok()
        );
        let err = Brokers::validate(&[option("security.protocol=carrier-pigeon")]).expect_err("bad value");
        assert!(err.to_string().starts_with("kafka option `security.protocol`: "), "{err}");
    }

    #[test]
    fn options_come_after_the_tuning_so_the_operator_wins() {
        let brokers = Brokers::with_options("k:9092", &[option("linger.ms=100"), option("client.id=edge-7")]);
        let config = brokers.client_config(&[("linger.ms", "10"), ("acks", "all")]);
        assert_eq!(config.get("linger.ms"), Some("100"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("bootstrap.servers"), Some("k:9092"));
        let native = config.create_native_config().expect("native");
        assert_eq!(native.get("client.id").expect("client.id"), "edge-7");
    }

    #[test]
    fn secrets_are_the_keys_naming_a_password_a_secret_or_a_key() {
        assert!(option("sasl.password=x").is_secret());
        assert!(option("ssl.key.pem=x").is_secret());
        assert!(option("sasl.oauthbearer.client.secret=x").is_secret());
        assert!(!option("sasl.username=x").is_secret());
        assert!(!option("security.protocol=ssl").is_secret());
    }
}
