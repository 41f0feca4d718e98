//! A plugin's manifest, `NAME.toml` beside `NAME.wasm`: what the operator expects the component to
//! be (name, version, stage kind, the sha256 of the file), its configuration, its resource limits,
//! what it is granted, and whether it runs as the shadow of a live detector.
//!
//! ```toml
//! name = "zscore"               # must be the file's name
//! version = "0.1.0"             # refused if the component reports another version
//! kind = "detector"             # refused if the component exports the other interface
//! sha256 = "9f2c…"              # refused if the file's digest differs (a half-copied file, say)
//! shadow_of = "zscore"          # optional: judge the live detector's readings, stored apart
//!
//! [config]                      # the stage's configuration (passed to `create` as JSON)
//! history = 200
//!
//! [limits]
//! memory_mib = 128              # linear memory cap (default 256; at most the host's ceiling)
//! call_deadline_ms = 2000       # CPU deadline of one call (default 5000; at most the ceiling)
//!
//! [grants]
//! env = ["TZ"]                  # environment variables the plugin may read (default none; only
//!                               # those the host allows, none by default)
//! ```
//!
//! Every key is optional; an unknown key is an error. Without a manifest, `NAME.json` (if any) is
//! the configuration and everything else is the default: no file system, network or environment.
//! The manifest is text beside a plugin file, so it is held to the host's [`PluginCeilings`]: a
//! limit above its ceiling, or a grant the host does not allow, refuses the plugin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[cfg(doc)]
use super::PluginCeilings;
use super::output::display_text;
use super::{PluginError, PluginLimits, StageKind};

/// `NAME.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name: the file name without `.wasm` (a manifest that says otherwise is refused).
    pub name: Option<String>,
    /// The version the component must report in its `stage-info`.
    pub version: Option<String>,
    /// The stage kind the component must be.
    pub kind: Option<StageKind>,
    /// The lowercase hex sha256 the `.wasm` file must have.
    pub sha256: Option<String>,
    /// The live detector this one shadows: it sees the same readings, its verdicts are stored in
    /// `shadow_predictions`, and it flags nothing.
    pub shadow_of: Option<String>,
    /// The stage's configuration.
    #[serde(default)]
    pub config: toml::Table,
    /// Resource limits, each defaulting to the host's.
    #[serde(default)]
    pub limits: ManifestLimits,
    /// What the plugin may access beyond computing.
    #[serde(default)]
    pub grants: Grants,
}

/// `[limits]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    /// Linear memory cap, MiB.
    pub memory_mib: Option<u64>,
    /// CPU deadline of one call, milliseconds.
    pub call_deadline_ms: Option<u64>,
}

/// `[grants]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Environment variables passed to the plugin (the host's values; absent ones are left out).
    #[serde(default)]
    pub env: Vec<String>,
}

/// Where a plugin's manifest came from, with what it says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginSpec {
    /// The manifest (from `NAME.toml`, or the defaults).
    pub manifest: Manifest,
    /// The configuration as JSON (`[config]`, else `NAME.json`, else `{}`).
    pub config: String,
    /// The file it came from, if any (`NAME.toml` or `NAME.json`).
    pub source: Option<PathBuf>,
}

impl PluginSpec {
    /// Reads the manifest (or the configuration) beside the plugin file `wasm`.
    pub fn beside(wasm: &Path) -> Result<PluginSpec, PluginError> {
        let toml_path = wasm.with_extension("toml");
        if let Some(text) = read_optional(&toml_path)? {
            let manifest: Manifest = toml::from_str(&text).map_err(|err| PluginError::Manifest {
                path: toml_path.clone(),
                message: display_text(err.message()),
            })?;
            let config = serde_json::to_string(&manifest.config)
                .map_err(|err| PluginError::Manifest { path: toml_path.clone(), message: err.to_string() })?;
            let spec = PluginSpec { manifest, config, source: Some(toml_path) };
            spec.check_name(wasm)?;
            return Ok(spec);
        }
        let json_path = wasm.with_extension("json");
        Ok(match read_optional(&json_path)? {
            Some(config) => PluginSpec { manifest: Manifest::default(), config, source: Some(json_path) },
            None => PluginSpec { manifest: Manifest::default(), config: "{}".to_owned(), source: None },
        })
    }

    /// A spec with `config` and no manifest (tools and tests that configure a plugin directly).
    pub fn with_config(config: String) -> PluginSpec {
        PluginSpec { config, ..PluginSpec::default() }
    }

    fn check_name(&self, wasm: &Path) -> Result<(), PluginError> {
        let stem = wasm.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        match &self.manifest.name {
            Some(name) if *name != stem => {
                Err(self.refused(format!("names plugin {name:?}, but the file is {stem}.wasm")))
            }
            _ => Ok(()),
        }
    }

    /// Checks the file's bytes against `sha256`.
    pub fn check_digest(&self, bytes: &[u8]) -> Result<(), PluginError> {
        use sha2::Digest;
        let Some(expected) = &self.manifest.sha256 else { return Ok(()) };
        let actual: String = sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        if actual.eq_ignore_ascii_case(expected.trim()) {
            Ok(())
        } else {
            Err(self.refused(format!("expects sha256 {expected}, the file has {actual}")))
        }
    }

    /// Checks the component's kind and reported version against the manifest.
    pub fn check_component(&self, kind: StageKind, version: &str) -> Result<(), PluginError> {
        if let Some(expected) = self.manifest.kind
            && expected != kind
        {
            return Err(self.refused(format!("expects a {expected:?} stage, the component is a {kind:?}")));
        }
        match &self.manifest.version {
            Some(expected) if expected != version => {
                Err(self.refused(format!("expects version {expected}, the component reports {version}")))
            }
            _ => Ok(()),
        }
    }

    /// `base` with the manifest's limits applied; refused past `base.ceilings`.
    pub fn limits(&self, base: &PluginLimits) -> Result<PluginLimits, PluginError> {
        let mut limits = base.clone();
        let ceilings = &base.ceilings;
        if let Some(mib) = self.manifest.limits.memory_mib {
            let bytes = usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
            if bytes > ceilings.memory_bytes {
                return Err(self.refused(format!(
                    "asks for memory_mib = {mib}, past the host's ceiling of {} MiB",
                    ceilings.memory_bytes >> 20
                )));
            }
            limits.memory_bytes = bytes;
        }
        if let Some(ms) = self.manifest.limits.call_deadline_ms {
            let deadline = Duration::from_millis(ms.max(1));
            if deadline > ceilings.call_deadline {
                return Err(self.refused(format!(
                    "asks for call_deadline_ms = {ms}, past the host's ceiling of {} ms",
                    ceilings.call_deadline.as_millis()
                )));
            }
            limits.call_deadline = deadline;
        }
        Ok(limits)
    }

    /// The granted environment variables with the host's values; refused if the manifest grants a
    /// variable that `allowed` (the host's [`PluginCeilings::env_allowed`]) does not name.
    pub fn env(&self, allowed: &[String]) -> Result<Vec<(String, String)>, PluginError> {
        let grants = &self.manifest.grants.env;
        if let Some(denied) = grants.iter().find(|k| !allowed.contains(k)) {
            let allowed = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
            return Err(self.refused(format!(
                "grants the environment variable {denied:?}, which the host does not allow plugins (allowed: {allowed})"
            )));
        }
        Ok(grants.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v))).collect())
    }

    /// A refusal of the manifest; its message, which may quote the manifest, shown fit.
    fn refused(&self, message: String) -> PluginError {
        PluginError::Manifest { path: self.source.clone().unwrap_or_default(), message: display_text(&message) }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, PluginError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PluginError::Read { path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::PluginCeilings;

    /// A new folder, deleted when dropped.
    fn folder(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("iotstream-manifest-{name}-")).tempdir().expect("folder")
    }

    #[test]
    fn a_manifest_gives_config_limits_grants_and_expectations() {
        let scratch = folder("full");
        let dir = scratch.path();
        let wasm = dir.join("zscore.wasm");
        std::fs::write(
            dir.join("zscore.toml"),
            r#"name = "zscore"
version = "0.1.0"
kind = "detector"
shadow_of = "zscore-live"
[config]
history = 200
threshold = 2.5
[limits]
memory_mib = 64
call_deadline_ms = 250
[grants]
env = ["PATH", "IOTSTREAM_SURELY_UNSET"]
"#,
        )
        .expect("manifest");
        let spec = PluginSpec::beside(&wasm).expect("valid");
        assert_eq!(spec.config, r#"{"history":200,"threshold":2.5}"#);
        assert_eq!(spec.manifest.shadow_of.as_deref(), Some("zscore-live"));
        let limits = spec.limits(&PluginLimits::default()).expect("under the ceilings");
        assert_eq!((limits.memory_bytes, limits.call_deadline), (64 << 20, Duration::from_millis(250)));
        let allowed = ["PATH".to_owned(), "IOTSTREAM_SURELY_UNSET".to_owned()];
        assert_eq!(spec.env(&allowed).expect("allowed").iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["PATH"]);
        assert!(spec.check_component(StageKind::Detector, "0.1.0").is_ok());
        assert_eq!(
            spec.check_component(StageKind::Aggregator, "0.1.0").map_err(|e| e.to_string()),
            Err(format!(
                "plugin manifest {}: expects a Detector stage, the component is a Aggregator",
                dir.join("zscore.toml").display()
            ))
        );
        assert!(spec.check_component(StageKind::Detector, "0.2.0").is_err());
    }

    /// A spec whose manifest says `limits` and `grants`.
    fn asking(memory_mib: Option<u64>, call_deadline_ms: Option<u64>, env: &[&str]) -> PluginSpec {
        PluginSpec {
            manifest: Manifest {
                limits: ManifestLimits { memory_mib, call_deadline_ms },
                grants: Grants { env: env.iter().map(|k| (*k).to_owned()).collect() },
                ..Manifest::default()
            },
            source: Some(PathBuf::from("p.toml")),
            ..PluginSpec::default()
        }
    }

    #[test]
    fn a_manifest_cannot_raise_its_limits_past_the_hosts_ceilings() {
        let base = PluginLimits::default();
        let refused = |spec: PluginSpec| spec.limits(&base).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(
            refused(asking(Some(257), None, &[])),
            Err("plugin manifest p.toml: asks for memory_mib = 257, past the host's ceiling of 256 MiB".into())
        );
        assert_eq!(
            refused(asking(None, Some(5_001), &[])),
            Err("plugin manifest p.toml: asks for call_deadline_ms = 5001, past the host's ceiling of 5000 ms".into())
        );
        assert_eq!(refused(asking(Some(u64::MAX), None, &[])).map_err(|e| e.contains("memory_mib")), Err(true));
        let at_ceiling = asking(Some(256), Some(5_000), &[]).limits(&base).expect("at the ceilings");
        assert_eq!((at_ceiling.memory_bytes, at_ceiling.call_deadline), (256 << 20, Duration::from_secs(5)));
        // An operator who raises the ceilings lets a manifest ask for more.
        let raised = PluginLimits {
            ceilings: PluginCeilings {
                memory_bytes: 1 << 30,
                call_deadline: Duration::from_secs(30),
                env_allowed: vec![],
            },
            ..PluginLimits::default()
        };
        let limits = asking(Some(1024), Some(30_000), &[]).limits(&raised).expect("under the raised ceilings");
        assert_eq!((limits.memory_bytes, limits.call_deadline), (1 << 30, Duration::from_secs(30)));
    }

    #[test]
    fn only_allowed_environment_variables_can_be_granted() {
        let database = asking(None, None, &["DATABASE_URL"]);
        assert_eq!(
            database.env(&[]).map_err(|e| e.to_string()),
            Err("plugin manifest p.toml: grants the environment variable \"DATABASE_URL\", which the host does not allow plugins (allowed: none)".into())
        );
        let allowed = ["TZ".to_owned(), "LANG".to_owned()];
        let err = database.env(&allowed).expect_err("not on the list").to_string();
        assert!(err.ends_with("(allowed: TZ, LANG)"), "{err}");
        assert_eq!(asking(None, None, &[]).env(&[]).expect("nothing asked"), Vec::<(String, String)>::new());
    }

    #[test]
    fn without_a_manifest_the_json_is_the_config_and_a_wrong_one_is_refused() {
        let scratch = folder("json");
        let dir = scratch.path();
        let wasm = dir.join("window.wasm");
        assert_eq!(PluginSpec::beside(&wasm).expect("no files").config, "{}");
        std::fs::write(dir.join("window.json"), r#"{"window_ms":1000}"#).expect("json");
        assert_eq!(PluginSpec::beside(&wasm).expect("json").config, r#"{"window_ms":1000}"#);
        std::fs::write(dir.join("window.toml"), "name = \"other\"\n").expect("toml");
        let err = PluginSpec::beside(&wasm).expect_err("wrong name").to_string();
        assert!(err.ends_with(r#"names plugin "other", but the file is window.wasm"#), "{err}");
        std::fs::write(dir.join("window.toml"), "colour = \"blue\"\n").expect("toml");
        let err = PluginSpec::beside(&wasm).expect_err("unknown key").to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn the_digest_must_match_when_given() {
        let spec = PluginSpec {
            manifest: Manifest {
                // sha256 of "abc" (FIPS 180-2 example).
                sha256: Some("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD".into()),
                ..Manifest::default()
            },
            ..PluginSpec::default()
        };
        assert!(spec.check_digest(b"abc").is_ok());
        assert!(spec.check_digest(b"abd").is_err());
        assert!(PluginSpec::default().check_digest(b"anything").is_ok());
    }
}
