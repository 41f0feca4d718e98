//! The two plugin folders a host loads from, as Grafana or Vector lay them out: the built-in
//! plugins (shipped beside the binary, replaced by an upgrade, never written by the operator) and
//! the drop-in folder (where operators and plugin authors put their own). A plugin is a name; the
//! drop-in `NAME.wasm` overrides the built-in one of the same name, whole: its manifest and
//! configuration are those beside it, never the built-in's. Removing the drop-in brings the
//! built-in back. One resolution serves the start (every name at once), the watch (one changed
//! name) and the commands that open a plugin by name (`replay`, `evaluate`, `bench-plugins`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::PluginError;

/// Which folder a plugin file is in (the API shows it for each plugin).
pub use iotstream_api::PluginLayer;

/// A plugin's file and the folder it was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFile {
    /// `FOLDER/NAME.wasm`.
    pub path: PathBuf,
    /// The folder's layer.
    pub layer: PluginLayer,
    /// With a drop-in: whether it overrides a built-in of the same name.
    pub overrides_builtin: bool,
}

/// The built-in plugins folder (if the host loads built-ins) and the drop-in folder (if any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginFolders {
    builtin: Option<PathBuf>,
    dropin: Option<PathBuf>,
}

impl PluginFolders {
    /// `builtin` (`None`: no built-in plugin) under `dropin` (`None`: no drop-in folder).
    pub fn new(builtin: Option<PathBuf>, dropin: Option<PathBuf>) -> Self {
        PluginFolders { builtin, dropin }
    }

    /// The built-in plugins folder.
    pub fn builtin(&self) -> Option<&Path> {
        self.builtin.as_deref()
    }

    /// The drop-in folder.
    pub fn dropin(&self) -> Option<&Path> {
        self.dropin.as_deref()
    }

    /// Each configured folder with its layer, the built-ins first.
    pub fn layers(&self) -> impl Iterator<Item = (PluginLayer, &Path)> {
        let builtin = self.builtin.as_deref().map(|dir| (PluginLayer::BuiltIn, dir));
        let dropin = self.dropin.as_deref().map(|dir| (PluginLayer::DropIn, dir));
        builtin.into_iter().chain(dropin)
    }

    /// The folder of `layer`, if configured.
    pub fn dir(&self, layer: PluginLayer) -> Option<&Path> {
        match layer {
            PluginLayer::BuiltIn => self.builtin(),
            PluginLayer::DropIn => self.dropin(),
        }
    }

    /// The file plugin `name` loads from now: the drop-in's `NAME.wasm` if there is one, else the
    /// built-in's; `None` when neither folder holds it.
    pub fn locate(&self, name: &str) -> Option<PluginFile> {
        let file = format!("{name}.wasm");
        let builtin = self.builtin().map(|dir| dir.join(&file)).filter(|path| path.is_file());
        match self.dropin().map(|dir| dir.join(&file)).filter(|path| path.is_file()) {
            Some(path) => Some(PluginFile { path, layer: PluginLayer::DropIn, overrides_builtin: builtin.is_some() }),
            None => builtin.map(|path| PluginFile { path, layer: PluginLayer::BuiltIn, overrides_builtin: false }),
        }
    }

    /// Whether the drop-in folder holds `NAME.wasm` (so a change to the built-in one does not
    /// matter while it is there).
    pub fn overridden(&self, name: &str) -> bool {
        self.dropin().is_some_and(|dir| dir.join(format!("{name}.wasm")).is_file())
    }

    /// Every plugin of both folders, by name, each from the folder it loads from ([`locate`
    /// ](Self::locate)). A configured folder that cannot be read is an error naming it.
    pub fn resolve(&self) -> Result<BTreeMap<String, PluginFile>, PluginError> {
        let mut plugins = BTreeMap::new();
        for (layer, dir) in self.layers() {
            for name in plugin_names(dir)? {
                let overrides_builtin = layer == PluginLayer::DropIn && plugins.contains_key(&name);
                let path = dir.join(format!("{name}.wasm"));
                plugins.insert(name, PluginFile { path, layer, overrides_builtin });
            }
        }
        Ok(plugins)
    }
}

impl PluginFolders {
    /// The names with a manifest or configuration (`NAME.toml`, `NAME.json`) in the drop-in folder
    /// but no `NAME.wasm` there: they configure nothing, since a drop-in replaces a built-in whole.
    pub fn lone_dropin_settings(&self) -> Vec<String> {
        let Some(dir) = self.dropin() else { return Vec::new() };
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|file| !file.starts_with('.'))
            .filter_map(|file| file.strip_suffix(".toml").or_else(|| file.strip_suffix(".json")).map(str::to_owned))
            .filter(|name| !dir.join(format!("{name}.wasm")).is_file())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The plugin names of `dir`: `NAME` of each `NAME.wasm` that is not hidden (a copy in progress).
pub fn plugin_names(dir: &Path) -> Result<Vec<String>, PluginError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PluginError::Read { path: dir.to_owned(), source })?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|file| !file.starts_with('.'))
        .filter_map(|file| file.strip_suffix(".wasm").map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::Builder::new().prefix("iotstream-folders-").tempdir().expect("folder");
        for file in files {
            std::fs::write(dir.path().join(file), b"x").expect("write");
        }
        dir
    }

    #[test]
    fn a_dropin_overrides_the_builtin_of_its_name_and_adds_the_others() {
        let builtin = folder(&["zscore.wasm", "zscore.toml", "tumbling-window.wasm", "notes.txt"]);
        let dropin = folder(&["zscore.wasm", "mine.wasm", ".half.wasm", "lonely.toml"]);
        let folders = PluginFolders::new(Some(builtin.path().into()), Some(dropin.path().into()));
        let resolved = folders.resolve().expect("resolves");
        let shown: Vec<(&str, PluginLayer, bool)> =
            resolved.iter().map(|(name, file)| (name.as_str(), file.layer, file.overrides_builtin)).collect();
        assert_eq!(
            shown,
            [
                ("mine", PluginLayer::DropIn, false),
                ("tumbling-window", PluginLayer::BuiltIn, false),
                ("zscore", PluginLayer::DropIn, true),
            ]
        );
        assert_eq!(resolved["zscore"].path, dropin.path().join("zscore.wasm"));
        assert_eq!(folders.locate("zscore"), Some(resolved["zscore"].clone()));
        assert_eq!(
            folders.locate("tumbling-window").map(|f| f.path),
            Some(builtin.path().join("tumbling-window.wasm"))
        );
        assert_eq!(folders.locate("lonely"), None);
        assert!(folders.overridden("zscore") && !folders.overridden("tumbling-window"));
        assert_eq!(folders.lone_dropin_settings(), ["lonely"]);
        // The drop-in removed: the built-in is back.
        std::fs::remove_file(dropin.path().join("zscore.wasm")).expect("remove");
        let back = folders.locate("zscore").expect("built-in");
        assert_eq!((back.path, back.layer), (builtin.path().join("zscore.wasm"), PluginLayer::BuiltIn));
    }

    #[test]
    fn without_builtins_only_dropins_load_and_a_missing_folder_is_named() {
        let dropin = folder(&["mine.wasm"]);
        let folders = PluginFolders::new(None, Some(dropin.path().into()));
        assert_eq!(folders.resolve().expect("resolves").into_keys().collect::<Vec<_>>(), ["mine"]);
        let gone = dropin.path().join("gone");
        let missing = PluginFolders::new(Some(gone.clone()), None).resolve();
        assert!(matches!(missing, Err(PluginError::Read { path, .. }) if path == gone));
    }
}
