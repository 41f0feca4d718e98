//! The database's connections: every one the store opens over TCP has Nagle's algorithm off.
//!
//! sqlx 0.9.0 stopped setting `TCP_NODELAY`, and each batch's `COPY` then waited for the server's
//! delayed ACK before its last bytes went out: a quarter of the pipeline's rate and most of its
//! latency (docs/performance.md). The socket option is read back from the kernel for each of the
//! process's sockets connected to the server's port, so a driver that drops it again fails here.

use std::collections::HashSet;

use iotstream::store::{Store, pipeline_connections};
use sqlx::PgPool;

/// The inodes of this process's established TCP connections to port `port` (IPv4 and IPv6).
fn connections_to(port: u16) -> HashSet<u64> {
    let port = format!("{port:04X}");
    let mut inodes = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl, local address, remote address, state (01: established), ..., inode (the 10th).
            let (Some(remote), Some(state), Some(inode)) = (fields.get(2), fields.get(3), fields.get(9)) else {
                continue;
            };
            if remote.rsplit(':').next() == Some(port.as_str()) && *state == "01" {
                inodes.extend(inode.parse::<u64>());
            }
        }
    }
    inodes
}

/// This process's file descriptors that are the sockets `inodes` name, each with its inode.
fn socket_fds(inodes: &HashSet<u64>) -> Vec<(i32, u64)> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("the process's descriptors").flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Some(inode) = socket_inode(fd).filter(|i| inodes.contains(i)) {
            fds.push((fd, inode));
        }
    }
    fds
}

/// The inode of the socket `fd` is, if it is one.
fn socket_inode(fd: i32) -> Option<u64> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let target = target.to_string_lossy();
    target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// `TCP_NODELAY` of the socket `fd`, as the kernel has it, if `fd` is still the socket `inode`
/// before and after the call (the other tests of this binary open and close connections
/// meanwhile, and a descriptor's number is reused).
#[allow(unsafe_code)]
fn nodelay(fd: i32, inode: u64) -> Option<bool> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which is valid for them; on a
    // descriptor closed or reused meanwhile it fails or reads another socket, and both are
    // discarded below.
    let result =
        unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&raw mut value).cast(), &raw mut len) };
    (result == 0 && socket_inode(fd) == Some(inode)).then_some(value != 0)
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn every_connection_to_the_database_has_nagles_algorithm_off(pool: PgPool) {
    let options = (*pool.connect_options()).clone();
    let port = options.get_port();
    if options.get_socket().is_some() {
        // A Unix socket has no Nagle's algorithm: nothing to check (CI connects over TCP).
        return;
    }
    let store = Store::connect(options, pipeline_connections(2, 2)).await.expect("the store connects");
    // Hold two of the pipeline's connections and one of the API's, so that they stay open.
    let pipeline = (store.pool().acquire().await.expect("one"), store.pool().acquire().await.expect("two"));
    let api = store.api_pool().acquire().await.expect("an API connection");

    let checked: Vec<(i32, bool)> = socket_fds(&connections_to(port))
        .into_iter()
        .filter_map(|(fd, inode)| nodelay(fd, inode).map(|on| (fd, on)))
        .collect();
    assert!(checked.len() >= 3, "checked {} connections to port {port}, expected at least the 3 held", checked.len());
    let delayed: Vec<i32> = checked.iter().filter(|(_, on)| !on).map(|(fd, _)| *fd).collect();
    assert_eq!(delayed, Vec::<i32>::new(), "connections with Nagle's algorithm on");
    drop((pipeline, api));
}
