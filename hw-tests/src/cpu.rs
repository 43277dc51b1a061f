//! CPU time, read from /proc: this process's (user + system, all threads) and the whole machine's busy time (every
//! CPU, every process and kernel thread: in the rig that includes the emulated controllers, bluetoothd and the
//! kernel's Bluetooth workers). The `bench::` rounds print both per transfer, so a reader can tell a transfer the
//! CPU bounded from one the link did, and what each implementation costs per byte.

use std::time::Duration;

/// Linux's `USER_HZ`: /proc reports times in these ticks (100 on every architecture colink runs on).
const TICKS_PER_SEC: u64 = 100;

/// A reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuClock {
    process: Duration,
    busy: Duration,
    cpus: usize,
}

/// CPU time used between two readings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuUse {
    /// This process (both ends of the transfer, in the one-host set-up).
    pub(crate) process: Duration,
    /// All CPUs, all work (not idle, not waiting for I/O).
    pub(crate) busy: Duration,
    /// CPUs online.
    pub(crate) cpus: usize,
}

impl CpuClock {
    /// Reads both clocks; `None` where /proc cannot be read or parsed.
    pub(crate) fn now() -> Option<Self> {
        let process = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| process_ticks(&s))?;
        let (busy, cpus) = std::fs::read_to_string("/proc/stat").ok().and_then(|s| busy_ticks(&s))?;
        Some(Self { process: ticks(process), busy: ticks(busy), cpus })
    }

    /// What was used since `self`.
    pub(crate) fn since(self) -> Option<CpuUse> {
        let now = Self::now()?;
        Some(CpuUse {
            process: now.process.saturating_sub(self.process),
            busy: now.busy.saturating_sub(self.busy),
            cpus: now.cpus,
        })
    }
}

impl CpuUse {
    /// `process X s, machine Y % busy` over `wall`, for a round's line.
    pub(crate) fn describe(&self, wall: Duration, bytes: u64) -> String {
        let mib = bytes as f64 / (1024.0 * 1024.0);
        let capacity = wall.as_secs_f64() * self.cpus as f64;
        format!(
            "CPU: process {:.2} s ({:.0} ms/MiB), machine {:.0} % of {} CPUs busy",
            self.process.as_secs_f64(),
            self.process.as_secs_f64() * 1000.0 / mib.max(1e-9),
            100.0 * self.busy.as_secs_f64() / capacity.max(1e-9),
            self.cpus
        )
    }
}

fn ticks(n: u64) -> Duration {
    Duration::from_millis(n.saturating_mul(1000) / TICKS_PER_SEC)
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its closing parenthesis.
fn process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'; 14 is the 12th
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Busy ticks over all CPUs (the `cpu` line minus idle and iowait) and the number of CPUs, from /proc/stat.
fn busy_ticks(stat: &str) -> Option<(u64, usize)> {
    let total = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = total.split_whitespace().skip(1).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user and nice]
    let (idle, iowait) = (*values.get(3)?, *values.get(4)?);
    let all: u64 = values.iter().take(8).sum();
    let cpus = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count();
    Some((all.checked_sub(idle)?.checked_sub(iowait)?, cpus.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_lines() {
        let me = "4242 (colink (hw) tests) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 4 0 100";
        assert_eq!(process_ticks(me), Some(281));
        assert_eq!(process_ticks("garbage"), None);
        let stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\ncpu1 50 3 25 500 10 2 1 0 0 0\n";
        assert_eq!(busy_ticks(stat), Some((160, 2)));
        assert_eq!(ticks(281), Duration::from_millis(2810));
    }

    #[test]
    fn describes_per_mib_and_share() {
        let u = CpuUse { process: Duration::from_secs(2), busy: Duration::from_secs(10), cpus: 2 };
        let s = u.describe(Duration::from_secs(10), 10 * 1024 * 1024);
        assert_eq!(s, "CPU: process 2.00 s (200 ms/MiB), machine 50 % of 2 CPUs busy");
    }
}
