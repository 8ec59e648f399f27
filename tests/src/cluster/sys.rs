//! Running host tools (ip, iptables, ctr, crictl, kubectl) with errors that quote the command.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::error::{ClusterError, Result};

fn describe(program: &OsStr, args: &[&OsStr]) -> String {
    let mut s = program.to_string_lossy().into_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion and returns its output whatever the exit status.
pub fn output<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> Result<Output> {
    let program = program.as_ref();
    let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ClusterError::Spawn {
            command: describe(program, &args),
            source,
        })
}

/// Runs a command and fails unless it exits 0; returns its stdout.
pub fn run<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> Result<String> {
    let program = program.as_ref();
    let out = output(program, args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        Err(ClusterError::Command {
            command: describe(program, &args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs a command whose failure is expected and harmless during cleanup (deleting what may
/// already be gone); returns whether it succeeded.
pub fn try_run<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> bool {
    output(program, args)
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs a command feeding `stdin`, failing unless it exits 0.
pub fn run_with_stdin<S: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: &[S],
    stdin: &str,
) -> Result<String> {
    use std::io::Write;
    let program = program.as_ref();
    let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    let command = describe(program, &args);
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ClusterError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .map_err(|source| ClusterError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| ClusterError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ClusterError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Writes a file atomically (temp file + rename) so a component never reads half a config.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ClusterError::io("creating directory", dir))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(ClusterError::io("writing", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(ClusterError::io("setting permissions of", &tmp))?;
    std::fs::rename(&tmp, path).map_err(ClusterError::io("renaming into place", path))
}

pub fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(ClusterError::io("creating directory", path))
}
