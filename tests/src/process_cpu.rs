//! CPU time of processes, from /proc: what the daemon, or a peer's processes, spent during a
//! measurement.
use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;

/// The fields of `/proc/<pid>/stat` after the command name, which is in parentheses and may
/// hold spaces: index 0 is field 3 (state).
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(stat
        .rsplit_once(')')
        .context("malformed /proc stat")?
        .1
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

fn field(fields: &[String], number: usize) -> anyhow::Result<u64> {
    Ok(fields
        .get(number - 3)
        .context("short /proc stat")?
        .parse()?)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_sec)
}

/// User and system time of one process, all its threads.
pub fn process(pid: u32) -> anyhow::Result<Duration> {
    let fields = stat_fields(pid)?;
    // utime is field 14, stime 15.
    Ok(ticks_to_duration(field(&fields, 14)? + field(&fields, 15)?))
}

/// User and system time of a process and of every live process it forked, and they forked
/// (a forking server such as Kamailio works in its children, whose time reaches the parent
/// only when they exit).
pub fn process_tree(root: u32) -> anyhow::Result<Duration> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read.
        if let Ok(fields) = stat_fields(pid)
            && let Ok(parent) = field(&fields, 4)
        {
            children.entry(parent as u32).or_default().push(pid);
        }
    }
    let mut total = process(root)?;
    let mut pending = children.remove(&root).unwrap_or_default();
    while let Some(pid) = pending.pop() {
        if let Ok(time) = process(pid) {
            total += time;
        }
        pending.extend(children.remove(&pid).unwrap_or_default());
    }
    Ok(total)
}

/// A core's time so far from `/proc/stat`, in clock ticks: (busy, total). Busy counts
/// interrupts and softirqs too, which serve a process's sockets on its core without being
/// charged to it.
pub fn core_ticks(cpu: usize) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let label = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|line| line.split_whitespace().next() == Some(label.as_str()))
        .with_context(|| format!("no {label} in /proc/stat"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_counts_at_least_its_root() {
        let me = std::process::id();
        // Burn a little CPU so that the total is not zero at tick resolution.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(process_tree(me).unwrap() >= process(me).unwrap());
        assert!(process(me).unwrap() > Duration::ZERO);
    }

    #[test]
    fn a_core_is_busy_part_of_its_time() {
        let (busy, total) = core_ticks(0).unwrap();
        assert!(0 < busy && busy < total, "{busy} of {total}");
    }
}
