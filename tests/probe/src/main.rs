//! `champion-probe`: the one binary the cluster tests run inside pods (image
//! `champion/probe:dev`; no shell in it, so every action a test needs is a subcommand).
//!
//! - `serve`: HTTP on `--port` answering `/healthz` and, on any other path, a fixed body that
//!   names the pod, so a test can tell which replica answered.
//! - `get URL`: one HTTP GET; prints the status line and the body; exit 0 only on a 2xx.
//! - `kube-get PATH`: GET on the API server with the pod's ServiceAccount (in-cluster config,
//!   i.e. the `kubernetes` Service and the mounted token and CA); prints `status=<code>`.
//! - `resolve NAME`: the addresses NAME resolves to through the pod's resolver, one a line.
//! - `sandbox`: prints the uid, gid and whether the root filesystem is writable.
//! - `write-file PATH TEXT` / `cat PATH`: hostPath round trips.
//! - `fail --message M --code N`: writes M to the termination log and exits N.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = "champion-probe")]
        body: String,
    },
    Get {
        url: String,
    },
    KubeGet {
        path: String,
    },
    Resolve {
        name: String,
    },
    Sandbox,
    WriteFile {
        path: String,
        text: String,
    },
    Cat {
        path: String,
    },
    Fail {
        #[arg(long)]
        message: String,
        #[arg(long, default_value_t = 3)]
        code: u8,
        #[arg(long, default_value = "/dev/termination-log")]
        termination_log: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { port, body } => serve(port, body).await,
        Command::Get { url } => get(&url).await,
        Command::KubeGet { path } => kube_get(&path).await,
        Command::Resolve { name } => resolve(&name).await,
        Command::Sandbox => sandbox(),
        Command::WriteFile { path, text } => std::fs::write(&path, text)
            .map(|_| ExitCode::SUCCESS)
            .map_err(|e| format!("writing {path}: {e}")),
        Command::Cat { path } => std::fs::read_to_string(&path)
            .map(|t| {
                print!("{t}");
                ExitCode::SUCCESS
            })
            .map_err(|e| format!("reading {path}: {e}")),
        Command::Fail {
            message,
            code,
            termination_log,
        } => {
            if let Err(e) = std::fs::write(&termination_log, &message) {
                eprintln!("writing {termination_log}: {e}");
            }
            eprintln!("{message}");
            Ok(ExitCode::from(code))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("champion-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(port: u16, body: String) -> Result<ExitCode, String> {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| format!("binding port {port}: {e}"))?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| {
        std::fs::read_to_string("/etc/hostname")
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    let body = format!("{body} from {host}\n");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    eprintln!("serving on :{port}");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let body = body.clone();
                tokio::spawn(async move { let _ = answer(stream, &body).await; });
            }
            _ = term.recv() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Reads one request head and answers it; the connection is closed after the response.
async fn answer(mut stream: TcpStream, body: &str) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let text = if path == "/healthz" { "ok\n" } else { body };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn get(url: &str) -> Result<ExitCode, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported, got {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|e| format!("port in {url}: {e}"))?,
        ),
        None => (authority, 80),
    };
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending to {url}: {e}"))?;
    let mut resp = Vec::new();
    stream
        .read_to_end(&mut resp)
        .await
        .map_err(|e| format!("reading from {url}: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    println!("{status_line}");
    print!("{body}");
    let ok = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn kube_get(path: &str) -> Result<ExitCode, String> {
    let config = kube::Config::incluster().map_err(|e| format!("in-cluster config: {e}"))?;
    let client = kube::Client::try_from(config).map_err(|e| format!("client: {e}"))?;
    let req = http::Request::get(path)
        .body(kube::client::Body::from(Vec::new()))
        .map_err(|e| format!("request {path}: {e}"))?;
    let resp = client
        .send(req)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    println!("status={}", resp.status().as_u16());
    Ok(ExitCode::SUCCESS)
}

async fn resolve(name: &str) -> Result<ExitCode, String> {
    let addrs = tokio::net::lookup_host((name, 0))
        .await
        .map_err(|e| format!("resolving {name}: {e}"))?;
    let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
    ips.sort();
    ips.dedup();
    for ip in ips {
        println!("{ip}");
    }
    Ok(ExitCode::SUCCESS)
}

fn sandbox() -> Result<ExitCode, String> {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let rootfs = match std::fs::write("/.champion-probe-write-test", b"x") {
        Ok(()) => {
            let _ = std::fs::remove_file("/.champion-probe-write-test");
            "writable".to_string()
        }
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => "read-only".to_string(),
        Err(e) => format!("not-writable({e})"),
    };
    println!("uid={uid} gid={gid} rootfs={rootfs}");
    Ok(ExitCode::SUCCESS)
}
