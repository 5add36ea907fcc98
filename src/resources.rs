//! Resource guards: the memory a run will need, estimated before anything large is
//! allocated, against the memory the machine has, and a cap on worker threads. A run that
//! cannot fit is refused with [`Error::Resources`] and a hint, never an allocator abort.

use crate::{Error, Result};

/// Most worker threads per logical core that `threads` may ask for.
pub const THREADS_PER_CORE: usize = 4;

/// The largest worker-thread count accepted: [`THREADS_PER_CORE`] × the logical cores, and at
/// least 16.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * THREADS_PER_CORE).max(16)
}

/// Checks a worker-thread count (0: one per core).
pub fn check_threads(threads: usize) -> Result<()> {
    let max = max_threads();
    if threads > max {
        return Err(Error::Input(format!(
            "--threads {threads} is more than {max} ({THREADS_PER_CORE} per logical core of this \
             machine): use --threads 0 (one per core) or a number up to {max}"
        )));
    }
    Ok(())
}

/// Memory available to this process in bytes: `MemAvailable` of /proc/meminfo, lowered to
/// the cgroup's limit when one is set; `None` where neither can be read (not Linux).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024))
    });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|s| s.trim().parse::<u64>().ok());
    match (meminfo, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

/// The memory assumed where [`available_memory`] cannot tell: 16 GiB.
pub const ASSUMED_MEMORY: u64 = 16 << 30;

/// `bytes` for people: "166 GB", "12.5 MB", "512 bytes" (powers of 1000).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        v /= 1000.0;
        unit = u;
        if v < 1000.0 {
            break;
        }
    }
    if v < 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

/// Refuses `bytes` of memory for `what` when the machine does not have them. `hint` says
/// how to need less.
pub fn check_memory(what: &str, bytes: u64, hint: &str) -> Result<()> {
    let available = available_memory().unwrap_or(ASSUMED_MEMORY);
    if bytes > available {
        return Err(Error::Resources(format!(
            "{what} needs {} of memory but {} is available: {hint}",
            human_bytes(bytes),
            human_bytes(available)
        )));
    }
    Ok(())
}

/// `a × b × …` in u64, saturating (an estimate that overflows is "too much" anyway).
pub fn product(factors: &[u64]) -> u64 {
    factors.iter().fold(1u64, |acc, &f| acc.saturating_mul(f))
}

/// Caps a message at about `max` characters: it keeps the start and the end (where the
/// hint usually is) and says how much of the middle was left out.
pub fn cap_message(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let tail = max / 4;
    let head = max - tail;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(count - tail).collect();
    format!(
        "{start} … ({} more characters) … {end}",
        count - head - tail
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(128), "128 bytes");
        assert_eq!(human_bytes(166_000_000_000), "166 GB");
        assert_eq!(human_bytes(2_500_000), "2.5 MB");
        assert_eq!(human_bytes(u64::MAX), "18 EB");
    }

    #[test]
    fn caps_long_messages() {
        assert_eq!(cap_message("short", 10), "short");
        let long = "é".repeat(50);
        let capped = cap_message(&long, 12);
        assert_eq!(
            capped,
            format!(
                "{} … (38 more characters) … {}",
                "é".repeat(9),
                "é".repeat(3)
            )
        );
    }

    #[test]
    fn refuses_more_memory_than_exists() {
        let e = check_memory("the test", u64::MAX, "ask for less").unwrap_err();
        assert!(e.to_string().contains("the test needs 18 EB"), "{e}");
        check_memory("a byte", 1, "").unwrap();
    }
}
