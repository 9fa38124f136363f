//! CPU time and memory of a process, from /proc.

/// Nanoseconds a process has run on any CPU: the sum over its threads of the first
/// field of /proc/PID/task/TID/schedstat (exact, unlike clock-tick utime/stime).
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let path = task.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            let ns: u64 = text.split_whitespace().next().and_then(|f| f.parse().ok()).unwrap_or(0);
            total = total.saturating_add(ns);
        }
    }
    Some(total)
}

/// A `VmXxx:` field of /proc/PID/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
