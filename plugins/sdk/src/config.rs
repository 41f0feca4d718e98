//! Strict plugin configuration: a JSON object whose unknown keys are errors.

use serde::de::DeserializeOwned;

use crate::PluginError;

/// Parses a stage's configuration. An empty string or `{}` gives the defaults (the config type must
/// use `#[serde(default, deny_unknown_fields)]`).
pub fn parse_config<C: DeserializeOwned>(text: &str) -> Result<C, PluginError> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|err| PluginError::InvalidConfig(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Example {
        history: usize,
    }

    impl Default for Example {
        fn default() -> Self {
            Example { history: 100 }
        }
    }

    #[test]
    fn empty_gives_defaults_and_unknown_keys_are_refused() {
        assert_eq!(parse_config::<Example>(""), Ok(Example { history: 100 }));
        assert_eq!(parse_config::<Example>(r#"{"history": 7}"#), Ok(Example { history: 7 }));
        let err = parse_config::<Example>(r#"{"histroy": 7}"#);
        assert!(matches!(err, Err(PluginError::InvalidConfig(msg)) if msg.contains("histroy")));
    }
}
