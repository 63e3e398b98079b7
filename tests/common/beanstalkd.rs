//! A real beanstalkd for the worker tests, and a tiny client for its plain
//! text protocol (put, reserve-with-timeout, delete, stats-tube).
//!
//! Each [`Beanstalkd`] runs on its own loopback port with its own temp dir
//! (the `-b` binlog lives there), and is killed when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{DEADLINE, poll_until};

/// A beanstalkd process of this test's own.
pub struct Beanstalkd {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Beanstalkd {
    /// Starts beanstalkd on a free loopback port; `None` when it is not
    /// installed. Panics when it is installed but will not come up.
    pub fn start() -> Option<Beanstalkd> {
        let installed = Command::new("beanstalkd")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("rdaemon-beanstalkd")
            .tempdir()
            .unwrap();
        let binlog = dir.path().join("binlog");
        std::fs::create_dir(&binlog).unwrap();
        // A port the kernel just handed out is free until someone binds it;
        // another test may race us to it, so retry with a fresh one.
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
            let mut child = Command::new("beanstalkd")
                .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-b"])
                .arg(&binlog)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap();
            // Up once it answers, and it is ours: `stats` names its PID
            // (a port lost to another beanstalkd would answer too).
            let up = poll_until(DEADLINE, || {
                if child.try_wait().unwrap().is_some() {
                    return Some(false);
                }
                let mut c = Client::connect(port).ok()?;
                let pid = c.stats().get("pid")?.parse::<u32>().ok()?;
                Some(pid == child.id())
            });
            if up == Some(true) {
                return Some(Beanstalkd { child, port, dir });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "beanstalkd would not start: {}",
            std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
        );
    }

    /// A new connection to this server.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
            .unwrap_or_else(|e| panic!("cannot connect to beanstalkd on {}: {e}", self.port))
    }

    /// The directory of this server's binlog and stderr.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Beanstalkd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One connection speaking beanstalkd's text protocol. Every call panics on
/// an unexpected reply (this is test code: the reply is the message).
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(port: u16) -> std::io::Result<Client> {
        let writer = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        // No reply may take longer than this (reserve-with-timeout adds its
        // own wait on top).
        writer.set_read_timeout(Some(DEADLINE))?;
        let reader = BufReader::new(writer.try_clone()?);
        Ok(Client { reader, writer })
    }

    fn command(&mut self, line: &str, body: Option<&[u8]>) -> String {
        let mut msg = format!("{line}\r\n").into_bytes();
        if let Some(b) = body {
            msg.extend_from_slice(b);
            msg.extend_from_slice(b"\r\n");
        }
        self.writer
            .write_all(&msg)
            .unwrap_or_else(|e| panic!("beanstalkd: cannot send {line:?}: {e}"));
        let mut reply = String::new();
        match self.reader.read_line(&mut reply) {
            Ok(n) if n > 0 => reply.trim_end().to_string(),
            Ok(_) => panic!("beanstalkd closed the connection after {line:?}"),
            Err(e) => panic!("beanstalkd: no reply to {line:?}: {e}"),
        }
    }

    fn read_body(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len + 2];
        self.reader
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("beanstalkd: short body: {e}"));
        assert_eq!(&buf[len..], b"\r\n", "beanstalkd: body not ended by CRLF");
        buf.truncate(len);
        buf
    }

    /// Later puts go to `tube`.
    pub fn use_tube(&mut self, tube: &str) {
        let r = self.command(&format!("use {tube}"), None);
        assert_eq!(r, format!("USING {tube}"));
    }

    /// Reserves from `tube` only.
    pub fn watch_only(&mut self, tube: &str) {
        let r = self.command(&format!("watch {tube}"), None);
        assert!(r.starts_with("WATCHING"), "{r}");
        if tube != "default" {
            let r = self.command("ignore default", None);
            assert!(r.starts_with("WATCHING"), "{r}");
        }
    }

    /// Puts a job (priority 1024, no delay, `ttr` seconds to run); its ID.
    pub fn put(&mut self, body: &[u8], ttr: u32) -> u64 {
        let r = self.command(&format!("put 1024 0 {ttr} {}", body.len()), Some(body));
        r.strip_prefix("INSERTED ")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("beanstalkd refused a put: {r}"))
    }

    /// `reserve-with-timeout`: `(id, body)`, or `None` when it timed out.
    pub fn reserve_with_timeout(&mut self, secs: u32) -> Option<(u64, Vec<u8>)> {
        let r = self.command(&format!("reserve-with-timeout {secs}"), None);
        if r == "TIMED_OUT" || r == "DEADLINE_SOON" {
            return None;
        }
        let mut words = r.split(' ');
        let (Some("RESERVED"), Some(id), Some(len), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            panic!("unexpected reply to reserve: {r}");
        };
        let (id, len) = (id.parse().unwrap(), len.parse().unwrap());
        Some((id, self.read_body(len)))
    }

    pub fn delete(&mut self, id: u64) {
        let r = self.command(&format!("delete {id}"), None);
        assert_eq!(r, "DELETED", "delete {id}");
    }

    /// `stats-tube`: the YAML dictionary, flat (`current-jobs-ready` ...);
    /// empty when the tube does not exist (yet).
    pub fn stats_tube(&mut self, tube: &str) -> HashMap<String, String> {
        let r = self.command(&format!("stats-tube {tube}"), None);
        if r == "NOT_FOUND" {
            return HashMap::new();
        }
        self.yaml_reply(&r)
    }

    /// `stats`: the server's counters (`pid`, `total-jobs`, ...).
    pub fn stats(&mut self) -> HashMap<String, String> {
        let r = self.command("stats", None);
        self.yaml_reply(&r)
    }

    fn yaml_reply(&mut self, reply: &str) -> HashMap<String, String> {
        let len = reply
            .strip_prefix("OK ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected stats reply: {reply}"));
        let body = String::from_utf8(self.read_body(len)).unwrap();
        body.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.trim().trim_matches('"').to_string()))
            .collect()
    }

    /// One counter of `stats-tube` as a number (0 when the tube is unknown).
    pub fn tube_count(&mut self, tube: &str, key: &str) -> u64 {
        self.stats_tube(tube)
            .get(key)
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{key}: {v}")))
            .unwrap_or(0)
    }
}
