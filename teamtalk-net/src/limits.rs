//! Process resource limits a connection-heavy daemon needs raised.

use std::io;

/// Raises the soft `RLIMIT_NOFILE` (open file descriptors) to the hard
/// limit and returns the new soft limit.
///
/// Every connection is a descriptor, and distributions default the soft
/// limit to 1024, far below what one reactor holds. Raising the soft
/// limit up to the hard one needs no privileges. Where the hard limit is
/// unlimited, the kernel's per-process ceiling (`fs.nr_open` on Linux)
/// is used instead. On platforms without the limit this returns
/// `u64::MAX` and changes nothing.
///
/// # Errors
///
/// Reading or setting the limit failed.
pub fn raise_fd_limit() -> io::Result<u64> {
    #[cfg(unix)]
    {
        let (soft, hard) = rlimit::Resource::NOFILE.get()?;
        let mut target = hard;
        if target == rlimit::INFINITY {
            target = nr_open().unwrap_or(1 << 20);
        }
        if soft >= target {
            return Ok(soft);
        }
        rlimit::Resource::NOFILE.set(target, hard)?;
        Ok(target)
    }
    #[cfg(not(unix))]
    {
        Ok(u64::MAX)
    }
}

/// The kernel's per-process descriptor ceiling, where it can be read.
#[cfg(unix)]
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_is_idempotent_and_never_lowers() {
        let first = raise_fd_limit().expect("raise");
        let second = raise_fd_limit().expect("raise again");
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            let (soft, _) = rlimit::Resource::NOFILE.get().expect("get");
            assert_eq!(soft, second);
        }
    }
}
