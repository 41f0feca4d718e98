//! WASI commands (tools such as `forest-bench`), run by the same engine as the stages but not
//! stages: `main` with arguments, one read-only folder, stdout captured, no CPU deadline.

use std::path::Path;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::Component;
use wasmtime_wasi::WasiCtx;

use super::runtime::StageCtx;
use super::sandbox::GuestClock;
use super::{PluginError, PluginRuntime};

impl PluginRuntime {
    /// Runs a WASI command component (`main`) with `args`, the host folder `dir` readable at
    /// `/data`, and no other access; returns what it printed. For tools such as `forest-bench`,
    /// not for stages.
    pub fn run_command(&self, path: &Path, args: &[String], dir: &Path) -> Result<String, PluginError> {
        use wasmtime_wasi::FsPerms;
        use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
        let plugin = path.display().to_string();
        let trap = |err: wasmtime::Error| PluginError::Trap { plugin: plugin.clone(), message: format!("{err:#}") };
        let component = Component::from_file(&self.engine, path)
            .map_err(|err| PluginError::Compile { path: path.to_owned(), message: format!("{err:#}") })?;
        let stdout = MemoryOutputPipe::new(1 << 20);
        let mut wasi = WasiCtx::builder();
        wasi.args(args).stdout(stdout.clone()).inherit_stderr();
        wasi.preopened_dir(dir, "/data", FsPerms::ReadOnly).map_err(trap)?;
        // A tool keeps the real clocks (forest-bench times itself); its sleeps, should it have any,
        // go through the host's clock waits like a stage's, with no deadline.
        let ctx = StageCtx::new(wasi.build(), self.limits.memory_bytes, GuestClock::new(Duration::MAX));
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|ctx| ctx.meter());
        // A tool may run for minutes: no CPU deadline.
        store.set_epoch_deadline(u64::MAX / 2);
        let command = wasmtime_wasi::p2::bindings::sync::Command::instantiate(&mut store, &component, &self.linker)
            .map_err(trap)?;
        let outcome = command.wasi_cli_run().call_run(&mut store).map_err(trap)?;
        if outcome.is_err() {
            return Err(PluginError::Trap { plugin, message: "the command exited with a failure".into() });
        }
        Ok(String::from_utf8_lossy(&stdout.contents()).into_owned())
    }
}
