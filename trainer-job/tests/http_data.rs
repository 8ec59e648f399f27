//! Reading training data over plain http:// from a tiny server on 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{file_uri, wine_config, wine_dir};
use trainer_job::train;

/// Serves one file at one path (HEAD and GET); stopped and joined when dropped, so a failing
/// test leaves no server behind.
struct FileServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    fn start(path: &'static str, body: Vec<u8>) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, path, &body);
                }
            }
        });
        FileServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, path: &str, body: &[u8]) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut stream = reader.into_inner();
    let head = |status: &str, len: usize| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nContent-Type: text/csv\r\nLast-Modified: Fri, 27 Nov 2026 10:00:00 GMT\r\nETag: \"slot-1\"\r\nConnection: close\r\n\r\n"
        )
    };
    let _ = match (method, target == path) {
        ("HEAD", true) => stream.write_all(head("200 OK", body.len()).as_bytes()),
        ("GET", true) => stream
            .write_all(head("200 OK", body.len()).as_bytes())
            .and_then(|_| stream.write_all(body)),
        _ => stream.write_all(head("404 Not Found", 0).as_bytes()),
    };
}

#[tokio::test]
async fn training_data_can_come_from_an_http_url() {
    let body = std::fs::read(wine_dir().join("data_1.csv")).unwrap();
    let server = FileServer::start("/wine/data_1.csv", body);
    let root = tempfile::tempdir().unwrap();
    let config = wine_config(
        format!("http://127.0.0.1:{}/wine/data_1.csv", server.port),
        file_uri(&root.path().join("models/wine/v1")),
    );
    let report = train(&config).await.unwrap().report;
    assert_eq!(report.rows.train, 533);
    assert_eq!(report.rows.holdout, 533);
    assert!(report.challenger_score > 0.7, "{}", report.challenger_score);

    // A URL the server does not have is an error that names it.
    let mut missing = config.clone();
    missing.data_uri = format!("http://127.0.0.1:{}/wine/nope.csv", server.port);
    missing.model_uri = file_uri(&root.path().join("models/wine/v2"));
    let err = train(&missing).await.unwrap_err().to_string();
    assert_eq!(err, format!("{} does not exist", missing.data_uri));
}
