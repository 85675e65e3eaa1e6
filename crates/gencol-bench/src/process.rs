//! The processes under test (gencol, rotel, the null server): started pinned to their
//! core with `taskset`, waited for until they listen, measured from `/proc`, killed.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 a second
/// on every architecture it exports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// A started process under test.
pub struct UnderTest {
    child: Child,
    pub pid: u32,
}

impl UnderTest {
    /// Runs `program args` under `taskset -c core`, output to `log`.
    pub fn start(program: &Path, args: &[String], core: usize, log: &Path) -> Result<UnderTest, String> {
        let out = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(core.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run taskset {}: {e}", program.display()))?;
        // taskset execs the program, so the pid is the program's.
        let pid = child.id();
        Ok(UnderTest { child, pid })
    }

    /// Waits until `port` accepts connections; fails early when the process exits.
    pub fn wait_listening(&mut self, port: u16, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                return Err(format!("exited with {status} before listening: {tail}"));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("not listening on port {port} after 15 s"))
    }

    /// Peak resident set size so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds of process `pid`, all threads, user and system.
/// Bytes `pid` caused to be sent to storage (`/proc/PID/io` `write_bytes`).
pub fn storage_bytes_written(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of this process (the generator and the sink).
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds("/proc/self/stat")
}

fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Starts `perf record` on `pid` for `duration` (DWARF call graphs, for flame graphs);
/// `None` when perf cannot run.
pub fn perf_record(pid: u32, file: &Path, duration: Duration) -> Option<Child> {
    Command::new("perf")
        .args(["record", "-F", "1999", "--call-graph", "dwarf,32768", "-p", &pid.to_string(), "-o"])
        .arg(file)
        .args(["--", "sleep", &format!("{:.1}", duration.as_secs_f64())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("  cannot run perf: {e}"))
        .ok()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free local port")
}

/// The rotel agent to compare with, and its version.
pub struct Rotel {
    pub agent: PathBuf,
    pub version: String,
}

/// `explicit`, or the agent of a venv under `work` (created with `pip install rotel`
/// when missing). `Err` says why there is no rotel, for the report.
pub fn find_or_install_rotel(explicit: Option<&Path>, work: &Path) -> Result<Rotel, String> {
    let agent = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let venv = work.join("rotel-venv");
            match venv_agent(&venv) {
                Some(a) => a,
                None => {
                    eprintln!("installing rotel into {} (pip install rotel)", venv.display());
                    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
                    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "rotel"]))?;
                    venv_agent(&venv).ok_or("pip installed rotel, but its rotel-agent binary is not in the venv")?
                }
            }
        }
    };
    let out =
        Command::new(&agent).arg("--version").output().map_err(|e| format!("cannot run {}: {e}", agent.display()))?;
    if !out.status.success() {
        return Err(format!("{} --version failed: {}", agent.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(Rotel { agent, version: String::from_utf8_lossy(&out.stdout).trim().to_owned() })
}

/// `lib/python3.X/site-packages/rotel/rotel-agent` of a venv.
fn venv_agent(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.filter_map(Result::ok).map(|e| e.path().join("site-packages/rotel/rotel-agent")).find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("{shown} failed: {}", err.lines().last().unwrap_or("no output")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        let before = own_cpu_seconds().expect("/proc/self/stat");
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(own_cpu_seconds().expect("/proc/self/stat") >= before + 0.03);
    }
}
