//! How the process uses glibc's allocator (Linux with glibc only; elsewhere
//! these do nothing). Measured by `scripts/bench`: the service's peak RSS.
//!
//! glibc gives each thread that allocates its own arena, up to eight per
//! core, and keeps what an arena once held. The service's threads that
//! allocate are few busy ones (two workers) and many short ones (the
//! blocking pool that runs Postgres calls), so most arenas serve one burst and
//! then sit on their memory: at 64 connections the service held 53 MB of
//! such memory. Two arenas, one per core, serve it as well.

/// Caps glibc's malloc arenas at one per core (at least two). Call first in
/// `main`, before other threads allocate.
/// An operator's `MALLOC_ARENA_MAX` wins.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(2);
        // SAFETY: mallopt only sets an allocator parameter; 0 means refused,
        // and the default then stays.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Gives memory freed after a burst back to the system (the status cache's
/// listener after thousands of notifications at once: libpq queued each).
pub(crate) fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it reads no pointer of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}
