//! Where the CPU went, and whether anything else ran on the machine
//! meanwhile: on 2 cores another build halves the figures.

use std::sync::Mutex;

use crate::broker::Broker;

/// utime + stime of a process, in seconds (`/proc/PID/stat`, 100 ticks/s).
pub fn cpu_secs_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU used by this process and by the broker between two points.
pub struct Cpu {
    me: f64,
    broker: f64,
}

impl Cpu {
    pub fn now(b: &Broker) -> Cpu {
        Cpu {
            me: cpu_secs_of("self").unwrap_or(f64::NAN),
            broker: b.pid().and_then(|p| cpu_secs_of(&p)).unwrap_or(f64::NAN),
        }
    }

    pub fn since(&self, b: &Broker, wall: f64) -> String {
        let now = Cpu::now(b);
        format!(
            "cpu: bench process {:.1} s ({:.0}% of one core), broker {:.1} s ({:.0}%)",
            now.me - self.me,
            100.0 * (now.me - self.me) / wall,
            now.broker - self.broker,
            100.0 * (now.broker - self.broker) / wall
        )
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Other builds, tests and benches seen running during the bench (they share
/// the 2 cores), with the part of the bench that saw them first.
pub static BUSY: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Looks for other `cargo bench`/`cargo test` processes and test or bench
/// binaries (`target/*/deps/*`), and remembers any new one.
pub fn check_busy(during: &str) {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut seen = BUSY.lock().unwrap();
    for entry in dir.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let cmd = cmd.trim();
        let cargo = cmd.contains("cargo bench") || cmd.contains("cargo test");
        let binary = cmd.contains("target/") && cmd.contains("/deps/");
        let ours = cmd.contains("--bench service") || cmd.contains("/deps/service-");
        if (cargo || binary) && !ours {
            let cmd: String = cmd.chars().take(120).collect();
            if !seen.iter().any(|(c, _)| *c == cmd) {
                println!("   NOTE: the machine is busy: {cmd}");
                seen.push((cmd, during.to_string()));
            }
        }
    }
}
