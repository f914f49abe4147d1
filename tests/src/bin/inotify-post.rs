//! `inotify-post DIR URL`: the floor of `testbed bench reload --parts http`. The least a
//! watcher can do: one thread blocked on an inotify fd that watches only `IN_MOVED_TO` on DIR,
//! and for each `..data` it POSTs to URL (`http://host:port/path`) over one kept-alive
//! HTTP/1.1 connection, reconnecting when the server closed it. No check of what was written.
//! Prints `ready` once the watch is in place.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::ExitCode;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, url] = args.as_slice() else {
        eprintln!("usage: inotify-post DIR http://HOST:PORT/PATH");
        return ExitCode::FAILURE;
    };
    let Some((authority, path)) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
    else {
        eprintln!("inotify-post: {url:?} is not http://HOST:PORT/PATH");
        return ExitCode::FAILURE;
    };
    let request =
        format!("POST /{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\n\r\n");
    let inotify = match Inotify::init(InitFlags::IN_CLOEXEC).and_then(|i| {
        i.add_watch(dir.as_str(), AddWatchFlags::IN_MOVED_TO)
            .map(|_| i)
    }) {
        Ok(inotify) => inotify,
        Err(err) => {
            eprintln!("inotify-post: watch {dir}: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("ready");
    let mut connection: Option<BufReader<TcpStream>> = None;
    while let Ok(events) = inotify.read_events() {
        if !events
            .iter()
            .any(|e| e.name.as_deref().is_some_and(|n| n == "..data"))
        {
            continue;
        }
        // A kept-alive connection the server closed fails on use: one retry on a fresh one.
        for _ in 0..2 {
            let stream = match connection.take() {
                Some(stream) => stream,
                None => match TcpStream::connect(authority) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        BufReader::new(stream)
                    }
                    Err(err) => {
                        eprintln!("inotify-post: connect {authority}: {err}");
                        break;
                    }
                },
            };
            if let Some(stream) = exchange(stream, request.as_bytes()) {
                connection = Some(stream);
                break;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Sends `request` and reads the answer's head and body; the connection back if it stays open.
fn exchange(mut stream: BufReader<TcpStream>, request: &[u8]) -> Option<BufReader<TcpStream>> {
    stream.get_mut().write_all(request).ok()?;
    let mut length = 0usize;
    let mut close = false;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
        close |= header == "connection: close";
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    (!close).then_some(stream)
}
