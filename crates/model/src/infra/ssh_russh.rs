//! [`SshConnector`] over `russh`: the server's key is checked against the pinned fingerprint
//! before anything is sent; a command travels as one shell word (`bash -lc '<command>'`)
//! under coreutils' `timeout`, which kills the command's whole process group at its deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};

use crate::domain::ssh::{
    CommandOutcome, HostKey, Pty, PtyOutput, PtyReader, PtySize, PtyWriter, RemoteCommand,
    SshConnector, SshCredential, SshFailure, SshSession, SshTarget, append_capped,
};

/// Extra time the client waits past a command's timeout for `timeout -k` to kill it and
/// report, before it hangs up itself.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The russh client.
#[derive(Clone, Debug, Default)]
pub struct RusshConnector;

/// Checks the presented key against the pinned one and remembers what was presented.
struct Pinning {
    pinned: Option<HostKey>,
    presented: Arc<Mutex<Option<HostKey>>>,
}

fn host_key(key: &russh::keys::PublicKey) -> HostKey {
    HostKey {
        algorithm: key.algorithm().as_str().to_owned(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
    }
}

impl client::Handler for Pinning {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_public_key else {
            // Host certificates would need a CA to trust: not supported, refused.
            return Ok(false);
        };
        let presented = host_key(key);
        let accepted = self
            .pinned
            .as_ref()
            .is_none_or(|pinned| pinned.fingerprint == presented.fingerprint);
        if let Ok(mut slot) = self.presented.lock() {
            *slot = Some(presented);
        }
        Ok(accepted)
    }
}

fn protocol(e: &russh::Error) -> SshFailure {
    SshFailure::Protocol(e.to_string())
}

fn presented(slot: &Arc<Mutex<Option<HostKey>>>) -> Option<HostKey> {
    slot.lock().ok().and_then(|s| s.clone())
}

#[async_trait]
impl SshConnector for RusshConnector {
    async fn connect(&self, target: &SshTarget) -> Result<Box<dyn SshSession>, SshFailure> {
        let slot = Arc::new(Mutex::new(None));
        let handler = Pinning {
            pinned: target.pinned.clone(),
            presented: Arc::clone(&slot),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..client::Config::default()
        });
        let started = Instant::now();
        let tcp = tokio::time::timeout(target.timeout, open_tcp(&target.host, target.port))
            .await
            .map_err(|_| SshFailure::Timeout)??;
        let left = target.timeout.saturating_sub(started.elapsed());
        let connected = tokio::time::timeout(left, client::connect_stream(config, tcp, handler))
            .await
            .map_err(|_| SshFailure::Timeout)?;
        let mut handle = match connected {
            Ok(handle) => handle,
            Err(e) => {
                return Err(match (&target.pinned, presented(&slot)) {
                    (Some(pinned), Some(shown)) if pinned.fingerprint != shown.fingerprint => {
                        SshFailure::HostKeyChanged {
                            pinned: pinned.fingerprint.clone(),
                            presented: shown.fingerprint,
                        }
                    }
                    _ => protocol(&e),
                });
            }
        };
        let key = presented(&slot)
            .ok_or_else(|| SshFailure::Protocol("the server presented no host key".into()))?;
        let left = target.timeout.saturating_sub(started.elapsed());
        let auth = tokio::time::timeout(left, authenticate(&mut handle, target))
            .await
            .map_err(|_| SshFailure::Timeout)??;
        if !auth {
            let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
            return Err(SshFailure::AuthFailed);
        }
        Ok(Box::new(RusshSession {
            handle,
            host_key: key,
        }))
    }

    fn check_key(&self, key: &str, passphrase: Option<&str>) -> Result<(), SshFailure> {
        russh::keys::decode_secret_key(key, passphrase)
            .map(|_| ())
            .map_err(|e| SshFailure::BadKey(e.to_string()))
    }

    async fn tcp_probe(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Duration, SshFailure> {
        let started = Instant::now();
        tokio::time::timeout(timeout, open_tcp(host, port))
            .await
            .map_err(|_| SshFailure::Timeout)??;
        Ok(started.elapsed())
    }
}

/// A TCP connection to `host:port`, never to a link-local or cloud-metadata address (a name
/// may resolve to one).
async fn open_tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream, SshFailure> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| SshFailure::Unreachable(e.to_string()))?
        .collect();
    let allowed: Vec<std::net::SocketAddr> = addrs
        .into_iter()
        .filter(|a| !maas_shared::net::is_forbidden_ip(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(SshFailure::Unreachable(format!(
            "{host} resolves to no address the platform may call"
        )));
    }
    let stream = tokio::net::TcpStream::connect(allowed.as_slice())
        .await
        .map_err(|e| SshFailure::Unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn authenticate(
    handle: &mut Handle<Pinning>,
    target: &SshTarget,
) -> Result<bool, SshFailure> {
    let result = match &target.credential {
        SshCredential::Password { password } => handle
            .authenticate_password(target.username.clone(), password.clone())
            .await
            .map_err(|e| protocol(&e))?,
        SshCredential::PrivateKey { key, passphrase } => {
            let key = russh::keys::decode_secret_key(key, passphrase.as_deref())
                .map_err(|e| SshFailure::BadKey(e.to_string()))?;
            let hash = if key.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| protocol(&e))?
                    .flatten()
            } else {
                None
            };
            handle
                .authenticate_publickey(
                    target.username.clone(),
                    PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                )
                .await
                .map_err(|e| protocol(&e))?
        }
    };
    Ok(result.success())
}

/// One authenticated connection.
struct RusshSession {
    handle: Handle<Pinning>,
    host_key: HostKey,
}

/// The remote command line: `command` as one quoted word for `bash -lc`, under `timeout`
/// when the server has it (it runs the command in its own process group and kills the group).
fn command_line(command: &RemoteCommand) -> Result<String, SshFailure> {
    let quoted = shlex::try_quote(&command.script)
        .map_err(|_| SshFailure::Protocol("the command holds a NUL byte".into()))?;
    let secs = command.timeout.as_secs().max(1);
    Ok(format!(
        "if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {secs} bash -lc {quoted}; else exec bash -lc {quoted}; fi"
    ))
}

#[async_trait]
impl SshSession for RusshSession {
    fn host_key(&self) -> &HostKey {
        &self.host_key
    }

    #[expect(
        clippy::wildcard_enum_match_arm,
        reason = "ChannelMsg is non-exhaustive; only output, exit and close matter here"
    )]
    async fn exec(&self, command: &RemoteCommand) -> Result<CommandOutcome, SshFailure> {
        let line = command_line(command)?;
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| protocol(&e))?;
        let started = Instant::now();
        channel
            .exec(true, line.into_bytes())
            .await
            .map_err(|e| protocol(&e))?;
        let mut out = CommandOutcome::default();
        let limit = command.output_limit;
        let deadline = tokio::time::Instant::now() + command.timeout + KILL_GRACE;
        loop {
            let msg = match tokio::time::timeout_at(deadline, channel.wait()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(_) => {
                    // `timeout` did not end it (absent, or the command escaped its group):
                    // signal it and hang up.
                    let _ = channel.signal(Sig::KILL).await;
                    let _ = channel.close().await;
                    out.timed_out = true;
                    out.exit_code = None;
                    break;
                }
            };
            match msg {
                ChannelMsg::Data { data } => {
                    out.stdout_truncated |= append_capped(&mut out.stdout, &data, limit);
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    out.stderr_truncated |= append_capped(&mut out.stderr, &data, limit);
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    out.exit_code = i32::try_from(exit_status).ok();
                }
                ChannelMsg::ExitSignal { .. } => out.exit_code = None,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        out.duration = started.elapsed();
        // coreutils' timeout exits 124 (TERM worked) or 137 (KILL needed) at the deadline.
        if matches!(out.exit_code, Some(124 | 137)) && out.duration >= command.timeout {
            out.timed_out = true;
        }
        Ok(out)
    }

    async fn shell(&self, size: PtySize) -> Result<Pty, SshFailure> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| protocol(&e))?;
        channel
            .request_pty(
                true,
                "xterm-256color",
                u32::from(size.cols),
                u32::from(size.rows),
                0,
                0,
                &[],
            )
            .await
            .map_err(|e| protocol(&e))?;
        channel
            .request_shell(true)
            .await
            .map_err(|e| protocol(&e))?;
        let (read, write) = channel.split();
        Ok(Pty {
            writer: Box::new(SshPtyWriter { write }),
            reader: Box::new(SshPtyReader { read, done: false }),
        })
    }

    async fn close(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

struct SshPtyWriter {
    write: russh::ChannelWriteHalf<Msg>,
}

#[async_trait]
impl PtyWriter for SshPtyWriter {
    async fn write(&self, data: &[u8]) -> Result<(), SshFailure> {
        self.write
            .data_bytes(bytes::Bytes::copy_from_slice(data))
            .await
            .map_err(|e| protocol(&e))
    }

    async fn resize(&self, size: PtySize) -> Result<(), SshFailure> {
        self.write
            .window_change(u32::from(size.cols), u32::from(size.rows), 0, 0)
            .await
            .map_err(|e| protocol(&e))
    }

    async fn close(&self) {
        let _ = self.write.eof().await;
        let _ = self.write.close().await;
    }
}

struct SshPtyReader {
    read: russh::ChannelReadHalf,
    done: bool,
}

#[async_trait]
impl PtyReader for SshPtyReader {
    #[expect(
        clippy::wildcard_enum_match_arm,
        reason = "ChannelMsg is non-exhaustive; only output, exit and close matter here"
    )]
    async fn next(&mut self) -> Option<PtyOutput> {
        if self.done {
            return None;
        }
        loop {
            match self.read.wait().await? {
                ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                    return Some(PtyOutput::Data(data.to_vec()));
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    self.done = true;
                    return Some(PtyOutput::Exit(i32::try_from(exit_status).ok()));
                }
                ChannelMsg::ExitSignal { .. } => {
                    self.done = true;
                    return Some(PtyOutput::Exit(None));
                }
                ChannelMsg::Close => return None,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_one_quoted_word() {
        let line = command_line(&RemoteCommand {
            script: r#"printf '%s|' 'a b' "$(echo x)" '$(no)'; exit 3"#.into(),
            timeout: Duration::from_secs(7),
            output_limit: 10,
        })
        .expect("quotable");
        assert!(line.contains("timeout -k 5 7 bash -lc "), "{line}");
        // What the remote login shell does with the line: the command runs exactly as written.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|x|$(no)|");
        assert_eq!(out.status.code(), Some(3));
        assert!(
            command_line(&RemoteCommand {
                script: "a\0b".into(),
                timeout: Duration::from_secs(1),
                output_limit: 1,
            })
            .is_err()
        );
    }
}
