//! A real etcd for the tests, and a TCP proxy that can partition one
//! "host" from it.
//!
//! [`Etcd::start`] runs `/usr/bin/etcd` on free loopback ports with a
//! temporary data directory and kills it on drop; it can be frozen
//! (SIGSTOP/SIGCONT) and restarted on the same ports and data. [`Proxy`]
//! forwards one loopback port to etcd; [`Proxy::freeze`] turns it into a
//! black hole (bytes in either direction are dropped, new connections
//! hang), as a network partition looks to the client, until
//! [`Proxy::unfreeze`] (connections that lost bytes are then closed).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdaemon::etcd::client::Client;

pub const ETCD: &str = "/usr/bin/etcd";

/// A port nobody listens on right now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// One etcd server on loopback.
pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it answers; `None` (said loudly on
    /// stderr) when etcd is not installed.
    pub fn start() -> Option<Etcd> {
        if !Path::new(ETCD).exists() {
            eprintln!(
                "\n*** SKIPPED: {ETCD} is missing (apt-get install etcd-server); \
                 the etcd tests did not run ***\n"
            );
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("rdaemon-etcd")
            .tempdir()
            .expect("temp dir");
        let mut etcd = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: tmp.path().join("data"),
            log: tmp.path().join("etcd.log"),
            _tmp: tmp,
        };
        etcd.spawn();
        Some(etcd)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// A client straight to this etcd (no proxy).
    pub fn client(&self) -> Client {
        Client::new(&[self.url()], Duration::from_secs(5)).expect("client")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("etcd runs").id() as i32
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(ETCD)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot run etcd");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits (deadline) until etcd serves a range.
    fn wait_ready(&mut self) {
        let client = self.client();
        let deadline = Instant::now() + crate::common::DEADLINE;
        loop {
            let probe = client.get(b"/ready", Instant::now() + Duration::from_secs(2));
            if probe.is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "etcd exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "etcd on port {} not ready: {probe:?}; log: {}",
                self.client_port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGSTOP: etcd stops answering, connections stay open.
    pub fn freeze(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    /// Stops etcd (SIGTERM, waits) and starts it again on the same ports
    /// with the same data.
    pub fn restart(&mut self) {
        self.kill(libc::SIGTERM);
        self.spawn();
    }

    fn kill(&mut self, sig: i32) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, libc::SIGCONT);
            signal(child.id() as i32, sig);
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill(libc::SIGKILL);
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with our own child's PID, which we have not reaped.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// A TCP forwarder from a loopback port to `target` that can be frozen.
pub struct Proxy {
    pub port: u16,
    frozen: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

/// How often blocked proxy threads look at the flags.
const TICK: Duration = Duration::from_millis(50);

impl Proxy {
    pub fn new(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (f, d) = (Arc::clone(&frozen), Arc::clone(&done));
        std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (f, d) = (Arc::clone(&f), Arc::clone(&d));
                        std::thread::spawn(move || serve(client, target, &f, &d));
                    }
                    Err(_) => std::thread::sleep(TICK),
                }
            }
        });
        Proxy { port, frozen, done }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on, every byte is dropped and new connections hang.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Forward again (connections that lost bytes are closed).
    pub fn unfreeze(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

fn serve(client: TcpStream, target: SocketAddr, frozen: &Arc<AtomicBool>, done: &Arc<AtomicBool>) {
    let _ = client.set_nonblocking(false);
    // A connection made while frozen goes nowhere until the thaw, then is
    // closed: the client sees a hang, as in a partition.
    while frozen.load(Ordering::SeqCst) {
        if done.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(TICK);
        if !frozen.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
    let Ok(upstream) = TcpStream::connect(target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let poisoned = Arc::new(AtomicBool::new(false));
    let pumps = [
        (client.try_clone(), upstream.try_clone()),
        (upstream.try_clone(), client.try_clone()),
    ];
    let mut threads = Vec::new();
    for (from, to) in pumps {
        let (Ok(from), Ok(to)) = (from, to) else {
            return;
        };
        let (f, d, p) = (Arc::clone(frozen), Arc::clone(done), Arc::clone(&poisoned));
        threads.push(std::thread::spawn(move || pump(from, to, &f, &d, &p)));
    }
    for t in threads {
        let _ = t.join();
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    frozen: &AtomicBool,
    done: &AtomicBool,
    poisoned: &AtomicBool,
) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if done.load(Ordering::SeqCst)
            || (poisoned.load(Ordering::SeqCst) && !frozen.load(Ordering::SeqCst))
        {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if frozen.load(Ordering::SeqCst) {
                    poisoned.store(true, Ordering::SeqCst);
                    continue; // dropped on the floor
                }
                if poisoned.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A plain HTTP server that is not etcd: answers every request with
/// `404 Not Found` and a text body. Runs until the process exits.
pub fn not_etcd_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\
                      Content-Length: 10\r\nConnection: close\r\n\r\nNot Found\n",
                );
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}
