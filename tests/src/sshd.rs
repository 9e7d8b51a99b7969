//! A real OpenSSH server for a test (Debian's `openssh-server`): on a free loopback port, with
//! its own ed25519 host key, and a throwaway user with a password and an authorized key.
//! Needs root (it creates the user); the user is removed on drop.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;
use crate::process::free_port;

/// A password with quotes and spaces, as admins pick them.
pub const PASSWORD: &str = "it's a \"quoted\" pass word; $(not run)";

pub struct Sshd {
    pub dir: PathBuf,
    pub port: u16,
    pub user: String,
    pub home: PathBuf,
    /// The user's private key (OpenSSH format).
    pub private_key: String,
    child: Option<Child>,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `SHA256:…` of a public key file, as `ssh-keygen -l` prints it.
pub fn fingerprint(public_key: &Path) -> String {
    let line = run(Command::new("ssh-keygen").arg("-lf").arg(public_key));
    line.split_whitespace().nth(1).unwrap().to_owned()
}

impl Sshd {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("maas-sshd-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        // Users and the shared scratch dir must reach it (the sshd runs as root).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let user = format!("mt{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
        let home = dir.join("home");
        run(Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/bash", "--home-dir"])
            .arg(&home)
            .arg(&user));
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            let mut stdin = chpasswd.stdin.take().unwrap();
            writeln!(stdin, "{user}:{PASSWORD}").unwrap();
        }
        assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
        let client = dir.join("keys/client");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "maas-test", "-f"])
            .arg(&client));
        std::fs::create_dir_all(dir.join("authorized")).unwrap();
        std::fs::copy(
            client.with_extension("pub"),
            dir.join("authorized").join(&user),
        )
        .unwrap();
        let private_key = std::fs::read_to_string(&client).unwrap();
        let mut sshd = Self {
            port: free_port(),
            dir,
            user,
            home,
            private_key,
            child: None,
        };
        sshd.new_host_key();
        sshd.spawn().await;
        sshd
    }

    /// The host key's public half.
    pub fn host_public_key(&self) -> PathBuf {
        self.dir.join("keys/host.pub")
    }

    /// The host key's fingerprint.
    pub fn host_fingerprint(&self) -> String {
        fingerprint(&self.host_public_key())
    }

    fn new_host_key(&self) {
        let key = self.dir.join("keys/host");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key));
    }

    async fn spawn(&mut self) {
        let config = self.dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized/%u\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin no\nAllowUsers {user}\nMaxSessions 20\nMaxStartups 50\nLogLevel VERBOSE\n",
                port = self.port,
                key = self.dir.join("keys/host").display(),
                dir = self.dir.display(),
                user = self.user,
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        let up = eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        assert!(up.is_some(), "sshd never listened: {}", self.log());
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts sshd on the same port with a new host key (as a reinstalled or spoofed host).
    pub async fn change_host_key(&mut self) {
        self.stop();
        self.new_host_key();
        self.spawn().await;
    }

    /// A directory every user may write (what remote commands leave for the test to read).
    pub fn scratch(&self) -> PathBuf {
        let dir = self.dir.join("scratch");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        dir
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// A file in the user's home, written as root and handed to the user.
    pub fn write_home(&self, relative: &str, body: &str, mode: u32) {
        let path = self.home.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{0}:{0}", self.user))
            .arg(&self.home));
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
        // Whatever the user still runs (a command past its test) goes with it.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.user])
            .status();
        let _ = Command::new("userdel").arg(&self.user).status();
    }
}
