//! Running the host's tools, with errors that say what is missing.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};

use crate::ImageError;

/// Why the Debian tools are needed, for [`ImageError::ToolMissing`].
pub(crate) const WHY_APT: &str =
    "zeroboot builds images from Debian packages and needs apt and dpkg";

/// A command line as one string, for messages.
pub(crate) fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    let mut args = cmd.get_args();
    for a in args.by_ref().take(12) {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    let rest = args.count();
    if rest > 0 {
        s.push_str(&format!(" ... ({rest} more)"));
    }
    s
}

fn spawn_error(cmd: &Command, e: std::io::Error, why: &'static str) -> ImageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ImageError::ToolMissing {
            tool: cmd.get_program().to_string_lossy().into_owned(),
            why,
        }
    } else {
        ImageError::Io {
            context: format!("running {}", cmdline(cmd)),
            source: e,
        }
    }
}

/// The last `n` lines of `s`.
pub(crate) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn failed(cmd: &Command, out: &Output) -> ImageError {
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.trim().is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    ImageError::Command {
        command: cmdline(cmd),
        status: out.status.to_string(),
        stderr: tail(&stderr, 20),
    }
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit is an error.
pub(crate) fn output(cmd: &mut Command, why: &'static str) -> Result<Output, ImageError> {
    let out = output_any(cmd, why)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(failed(cmd, &out))
    }
}

/// Runs `cmd` to completion, capturing its output, whatever its exit status.
pub(crate) fn output_any(cmd: &mut Command, why: &'static str) -> Result<Output, ImageError> {
    tracing::debug!("running {}", cmdline(cmd));
    cmd.stdin(Stdio::null());
    cmd.output().map_err(|e| spawn_error(cmd, e, why))
}

/// Runs `cmd`, handing each line of its stdout to `on_line` as it comes;
/// stderr is collected for the error. A non-zero exit is an error.
pub(crate) fn stream_lines(
    cmd: &mut Command,
    why: &'static str,
    mut on_line: impl FnMut(&str),
) -> Result<(), ImageError> {
    tracing::debug!("running {}", cmdline(cmd));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(cmd, e, why))?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_end(&mut buf);
        }
        buf
    });
    let mut stdout_text = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line);
            on_line(text.trim_end());
            stdout_text.extend_from_slice(&line);
            stdout_text.push(b'\n');
        }
    }
    let status = child.wait().ctx_run(cmd)?;
    let stderr = reader.join().unwrap_or_default();
    let out = Output {
        status,
        stdout: stdout_text,
        stderr,
    };
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(cmd, &out))
    }
}

trait RunContext<T> {
    fn ctx_run(self, cmd: &Command) -> Result<T, ImageError>;
}

impl<T> RunContext<T> for std::io::Result<T> {
    fn ctx_run(self, cmd: &Command) -> Result<T, ImageError> {
        self.map_err(|source| ImageError::Io {
            context: format!("waiting for {}", cmdline(cmd)),
            source,
        })
    }
}

/// Whether a program of this name is on `PATH` (as an executable file).
pub(crate) fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(program))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}
