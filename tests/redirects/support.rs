//! A real nginx in a temp dir (`nginx -p DIR -c nginx.conf`, `daemon off`, pid and logs in
//! DIR), killed when dropped; and ledgers of generated rows.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cfimg::item::{SourceId, SourceKind};
use cfimg::ledger::{LedgerWriter, Record, Version};

/// The nginx binary: CI installs it (.ci/run); a machine without it fails loudly.
pub fn nginx_bin() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "nginx is not installed: apt-get install -y --no-install-recommends nginx-light (.ci/run does)"
    );
}

/// A configuration that includes `map_file` in `http` and answers `$cfimg_redirect`.
pub fn nginx_conf(dir: &Path, port: u16, map_file: &Path) -> PathBuf {
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp-body;\n  proxy_temp_path {d}/tmp-proxy;\n  \
         fastcgi_temp_path {d}/tmp-fcgi;\n  uwsgi_temp_path {d}/tmp-uwsgi;\n  scgi_temp_path {d}/tmp-scgi;\n  \
         include {};\n  server {{\n    listen 127.0.0.1:{port};\n    server_name _;\n    \
         if ($cfimg_redirect) {{ return 301 $cfimg_redirect; }}\n    return 404;\n  }}\n}}\n",
        map_file.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    path
}

/// `nginx -t` on a configuration: (passed, its messages).
pub fn nginx_test(dir: &Path, conf: &Path) -> (bool, String) {
    let out = std::process::Command::new(nginx_bin())
        .args(["-t", "-q", "-e"])
        .arg(dir.join("error.log"))
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .output()
        .expect("nginx runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free port on 127.0.0.1 (nginx binds it itself; the test polls until it answers).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running nginx, killed when dropped.
pub struct Nginx {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
}

impl Nginx {
    /// Starts nginx on `conf` and waits (deadline 20 s) until it accepts connections.
    pub fn start(dir: &Path, conf: &Path, port: u16) -> Nginx {
        let child = std::process::Command::new(nginx_bin())
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut n = Nginx { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return n;
            }
            if let Ok(Some(status)) = n.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}): {log}");
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master (by its pid): it stops its worker; then reap it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ledger holding `keys` as uploaded items of one folder source, with path ids and
/// delivery URLs under `delivery`; returns the source number.
pub async fn ledger_with(path: &Path, folder: &str, keys: &[String], delivery: &str) -> i64 {
    let (writer, thread) = LedgerWriter::spawn(path).expect("writer");
    let source = writer
        .source(&SourceId::new(SourceKind::Dir, folder))
        .await
        .expect("source");
    for k in keys {
        let version = Version {
            source_id: source,
            key: k.clone(),
            size: 1,
            mtime_ns: 1,
            etag: None,
            options: None,
            sha256: Some("00".into()),
            ticket: Default::default(),
        };
        writer
            .record(Record::Uploaded {
                version,
                image_id: k.clone(),
                url: Some(format!(
                    "{delivery}{}/public",
                    cfimg::old_url::encode_key(k)
                )),
                attempts: 1,
                replaced: false,
                stamp: None,
                check_after: None,
                superseded: None,
            })
            .await
            .expect("record");
    }
    writer.flush().await.expect("flush");
    drop(writer);
    thread.join().expect("writer thread").expect("writer");
    source
}
