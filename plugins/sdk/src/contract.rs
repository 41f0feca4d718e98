//! The version of the WIT contract, `iotstream:pipeline@VERSION`, as Rust names it.
//!
//! `wit/pipeline.wit` declares the version once for WIT; this module holds every place Rust writes
//! it, host and plugins included:
//!
//! * [`contract_version!`](crate::contract_version) expands to it as a string literal, for
//!   `concat!` (the host builds the export names it checks plugins against from it), and
//!   [`CONTRACT_VERSION`] is the same as a constant;
//! * `__contract_bindings!` runs `wit_bindgen::generate!` for the SDK's own `types` bindings and
//!   for each plugin's stage world (through `export_detector!` and `export_aggregator!`).
//!   wit-bindgen reads its `with:` keys and its inline WIT as string literal tokens, before any macro
//!   inside them would expand, so those two literals repeat the version. They cannot drift: a
//!   version the WIT does not declare fails to compile, and a test holds [`CONTRACT_VERSION`] to
//!   the WIT.
//!
//! A released version is never edited: a new one goes beside it in the WIT, and Rust then names the
//! version the host and the SDK build against here.

/// Expands to the contract version (the `VERSION` of `iotstream:pipeline@VERSION`) as a string
/// literal, so that `concat!` can build the contract's names from it:
///
/// ```
/// const DETECTOR: &str = concat!("iotstream:pipeline/detector@", iotstream_plugin_sdk::contract_version!());
/// assert_eq!(DETECTOR, format!("iotstream:pipeline/detector@{}", iotstream_plugin_sdk::CONTRACT_VERSION));
/// ```
#[macro_export]
macro_rules! contract_version {
    () => {
        "0.2.0"
    };
}

/// The version of the WIT package `iotstream:pipeline` this SDK, its plugins and the host are
/// built against.
pub const CONTRACT_VERSION: &str = contract_version!();

/// `wit_bindgen::generate!` for the contract version: `(types)` gives the SDK's bindings of the
/// `types` interface alone ([`crate::wit`]); `("WORLD", "WIT FOLDER")` gives a plugin the bindings
/// of a stage world whose `types` are the SDK's. Used by the SDK's own macros only.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_bindings {
    (types) => {
        wit_bindgen::generate!({
            path: "../../wit",
            inline: "package iotstream:sdk; world types-only { import iotstream:pipeline/types@0.2.0; }",
            generate_all,
        });
    };
    ($world:literal, $wit:tt) => {
        wit_bindgen::generate!({
            world: $world,
            path: $wit,
            // wit-bindgen cannot parse `$crate` here: plugins depend on the SDK by this name.
            with: { "iotstream:pipeline/types@0.2.0": ::iotstream_plugin_sdk::wit::iotstream::pipeline::types },
        });
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wit_declares_the_contract_version() {
        let wit = include_str!("../../../wit/pipeline.wit");
        let packages: Vec<&str> = wit.lines().filter_map(|line| line.trim().strip_prefix("package ")).collect();
        assert_eq!(
            packages,
            [format!("iotstream:pipeline@{CONTRACT_VERSION};")],
            "the package line of wit/pipeline.wit"
        );
    }
}
