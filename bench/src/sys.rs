//! The few operating-system calls the harness needs: free loopback ports, the open-file
//! limit, CPU affinity and a process's resident memory.

use anyhow::{Context as _, bail};
use std::net::{Ipv4Addr, TcpListener};

/// A loopback port nobody listens on right now (the server binds it a moment later).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Raises this process's soft `RLIMIT_NOFILE` to at least `wanted` (children inherit
/// it), within the hard limit. Returns the new soft limit.
pub fn raise_open_files(wanted: u64) -> anyhow::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }
    if limit.rlim_max < wanted {
        bail!(
            "{wanted} open files are needed but the hard limit is {} (`ulimit -Hn`); raise it (e.g. `prlimit --nofile={wanted}:{wanted} --pid $$` as root) or use fewer subscribers",
            limit.rlim_max
        );
    }
    limit.rlim_cur = wanted;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        bail!("setrlimit(RLIMIT_NOFILE, {wanted}): {}", std::io::Error::last_os_error());
    }
    Ok(wanted)
}

/// Pins the calling thread (and the threads it starts afterwards) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write into it.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        bail!("cannot pin to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// `program` pinned to `cpu` (`taskset -c`), at priority `nice` (`nice -n`) unless 0.
/// The child gets SIGTERM if the harness dies first (Ctrl-C), so no server outlives it.
pub fn pinned(cpu: usize, nice: i32, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let mut command = if nice == 0 {
        std::process::Command::new("taskset")
    } else {
        let mut command = std::process::Command::new("nice");
        command.arg("-n").arg(nice.to_string()).arg("taskset");
        command
    };
    command.arg("-c").arg(cpu.to_string()).arg(program);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command
}

/// Sets the calling thread's nice value (threads started afterwards inherit it).
pub fn set_nice(nice: i32) -> anyhow::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    // SAFETY: setpriority takes plain integers; 0 names the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        bail!("cannot set nice {nice}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Cores online (not just those this thread may use: it may be pinned already).
pub fn cpus_online() -> usize {
    // SAFETY: sysconf only reads a constant.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(1).max(1)
}

/// Checks that the two cores exist and differ.
pub fn check_cpus(server: usize, client: usize) -> anyhow::Result<usize> {
    let cpus = cpus_online();
    if server == client {
        bail!("the server and the load generator must run on different cores (both are {server})");
    }
    if server.max(client) >= cpus {
        bail!("this machine has {cpus} cores; choose --server-cpu and --client-cpu below {cpus}");
    }
    Ok(cpus)
}

/// Resident memory of `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system, all threads) of `pid`, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> anyhow::Result<std::time::Duration> {
    let (user, system) = cpu_times(pid)?;
    Ok(user + system)
}

/// User and system CPU time (all threads) of `pid`, from `/proc/<pid>/stat`.
pub fn cpu_times(pid: u32) -> anyhow::Result<(std::time::Duration, std::time::Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a constant.
    let per_sec = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    let time = |t: u64| std::time::Duration::from_secs_f64(t as f64 / per_sec as f64);
    Ok((time(ticks(11)), time(ticks(12))))
}

/// The machine, for the report: core count and the CPU model.
pub fn machine() -> String {
    let cpus = cpus_online();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
    format!("{cpus} cores ({model}), Linux {kernel}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tcohort\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(super::parse_vm_rss(status), Some(12345));
        assert_eq!(super::parse_vm_rss("Name: x\n"), None);
    }
}
